"""The command table: `orchestra COMMAND --help` and `--version`, the quick commands free of torch, and secrets kept
out of `sys.argv` only while train/sweep run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from orchestra_testkit import REPO, subprocess_env

from orchestra.cli import main
from orchestra.cli.args import redacted_argv
from orchestra.cli.main import COMMANDS


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_prints_its_usage_and_options(command, flag, capsys):
    assert main([command, flag]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith(f"usage: orchestra {command}")
    assert "-h, --help" in out  # the options section
    assert COMMANDS[command].synopsis.split()[0] in out.splitlines()[0]  # the table and the module agree


def test_sweep_help_lists_its_flags_and_help_anywhere_wins(capsys):
    assert main(["sweep", "method=simclr,byol", "--help"]) == 0  # not "needs -m", not a sweep
    out = capsys.readouterr().out
    for flag in ("-m, --multirun", "--dry-run", "--wait"):
        assert flag in out
    assert main(["help", "train"]) == 0
    assert capsys.readouterr().out.startswith("usage: orchestra train")


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, command in COMMANDS.items():
        assert f"  {name:<7} {command.synopsis}" in out
    assert "orchestra COMMAND --help" in out


def test_version_is_the_project_version(capsys):
    expected = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"orchestra {expected}\n"


def test_unknown_command_is_one_error_line(capsys):
    assert main(["trian"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: unknown command 'trian'") and err.count("\n") == 1


@pytest.fixture()
def tiny_sweep(tmp_path) -> Path:
    """A finished local sweep of one member, from real files (the manifest written by launch.manifest)."""
    from launch import manifest

    sweep_dir = tmp_path / "runs" / "sweeps" / "2024-01-01_00-00-00"
    job_dir = sweep_dir / "000-method=simclr"
    job_dir.mkdir(parents=True)
    manifest.create(manifest.Sweep(
        sweep_dir=str(sweep_dir), command=["sweep", "method=simclr", "-m"], launcher="local",
        created_at=manifest.now(), swept_keys=["method"],
        members=[manifest.Member(index=0, overrides=["method=simclr"], job_dir=str(job_dir), state="COMPLETED",
                                 attempts=1, job_ids=[], finished_at=manifest.now())]))
    (job_dir / "results.json").write_text(json.dumps({
        "state": "COMPLETED", "method": "simclr", "attempts": 1, "wall_time_s": 12.0, "device_hours": 0.0033,
        "metrics": {"knn/top1": 0.5, "probe/top1": 0.6},
        "history": [{"epoch": 0, "trainer/global_step": 10, "knn/top1": 0.5, "probe/top1": 0.6}],
    }))
    return sweep_dir


def test_quick_commands_and_every_help_never_import_torch(tiny_sweep, tmp_path):
    """One fresh interpreter runs each in turn through main() and says after each whether torch is loaded; the
    first that loads it is named (once loaded, it stays)."""
    calls = [["--help"], ["--version"], *([name, "--help"] for name in COMMANDS),
             ["status", str(tiny_sweep)], ["report", str(tiny_sweep)], ["cancel", str(tiny_sweep)]]
    code = ("import json, sys\nfrom orchestra.cli import main\n"
            "for argv in json.loads(sys.argv[1]):\n"
            "    code = main(argv)\n"
            "    print('AFTER', ' '.join(argv[:2]), code, 'torch' in sys.modules, 'lightning' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code, json.dumps(calls)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, env=subprocess_env(COLUMNS="200"))
    assert result.returncode == 0, result.stderr[-3000:]
    after = [line.split() for line in result.stdout.splitlines() if line.startswith("AFTER ")]
    assert len(after) == len(calls), result.stdout[-3000:]
    heavy = [" ".join(argv) for argv, line in zip(calls, after, strict=True) if line[-2:] != ["False", "False"]]
    assert not heavy, f"these imported torch or Lightning (the first is the culprit): {heavy}"
    failed = [" ".join(argv) for argv, line in zip(calls, after, strict=True) if line[-3] != "0"]
    assert not failed, f"these did not exit 0:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"


def test_secrets_leave_sys_argv_only_while_the_block_runs(monkeypatch):
    argv = ["orchestra", "train", "method=byol", "+logger.api_key=s3cr3t", "logger.token=abc"]
    monkeypatch.setattr(sys, "argv", list(argv))
    with redacted_argv(argv[2:]):
        assert sys.argv == ["orchestra", "train", "method=byol", "+logger.api_key=<redacted>",
                            "logger.token=<redacted>"]
    assert sys.argv == argv
    with pytest.raises(RuntimeError), redacted_argv(argv[2:]):
        raise RuntimeError("a failed run restores it too")
    assert sys.argv == argv


def test_in_process_train_leaves_the_host_argv_alone(monkeypatch, tmp_path, capsys):
    host = ["pytest", "-k", "logger.api_key=not-ours"]  # not an argument of this orchestra call
    monkeypatch.setattr(sys, "argv", list(host))
    assert main(["train", "method=simclrr", "+logger.api_key=s3cr3t", f"output_root={tmp_path}"]) == 2
    assert sys.argv == host
    assert "s3cr3t" not in capsys.readouterr().err
