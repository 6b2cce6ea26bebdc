"""Files a job leaves behind: results are replaced atomically, and secrets given on the command line or in the
environment are never written into job or sweep directories.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from orchestra_testkit import TINY, run_cli, subprocess_env

from launch.atomic import atomic_write, write_json

# 40 characters, the shape of a real wandb key, so wandb takes it as a key rather than rejecting it early.
WANDB_KEY = "SECRETWANDBKEY" + "0123456789abcdefghijklmnop"
CLI_SECRET = "SECRET123"


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("cannot serialise")


def _files_containing(root: Path, *needles: str) -> list[str]:
    """Every file under root whose bytes, or whose path, contain one of the needles."""
    hits = []
    for path in root.rglob("*"):
        if any(n in str(path.relative_to(root)) for n in needles):
            hits.append(f"{path} (in its name)")
        elif path.is_file() and any(n.encode() in path.read_bytes() for n in needles):
            hits.append(str(path))
    return hits


def test_writer_failing_midway_leaves_the_previous_file_intact(tmp_path):
    target = tmp_path / "results.json"
    write_json(target, {"state": "RUNNING", "attempts": 1})
    before = target.read_bytes()

    def half_then_crash(handle):
        handle.write(b'{"state": "COMPLE')  # half a JSON document is already on disk when the writer dies
        raise KeyboardInterrupt  # as a preempted process would be interrupted

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_crash)
    assert target.read_bytes() == before
    assert json.loads(target.read_text()) == {"state": "RUNNING", "attempts": 1}
    # The temporary file was cleaned up: the folder holds only the real file.
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]

    # write_json itself: a value that cannot be serialised fails the write, not the previous contents.
    with pytest.raises(RuntimeError, match="cannot serialise"):
        write_json(target, {"state": "COMPLETED", "bad": Unprintable()})
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]

    # And a successful write replaces the file completely.
    write_json(target, {"state": "COMPLETED"})
    assert json.loads(target.read_text()) == {"state": "COMPLETED"}


def _wandb_env(tmp_path: Path) -> dict[str, str]:
    """wandb offline, with its per-user folders in tmp_path; the key is set as a user with an account would."""
    home = tmp_path / "wandb_home"
    return subprocess_env(WANDB_API_KEY=WANDB_KEY, WANDB_CONFIG_DIR=str(home / "config"),
                          WANDB_CACHE_DIR=str(home / "cache"), WANDB_DATA_DIR=str(home / "data"),
                          WANDB_ARTIFACT_DIR=str(home / "artifacts"))


def test_atomic_files_get_the_mode_a_plain_write_would_give(tmp_path):
    import os

    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    write_json(tmp_path / "atomic.json", {})
    assert (tmp_path / "atomic.json").stat().st_mode == plain.stat().st_mode  # not mkstemp's private 0600
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_api_keys_from_overrides_or_environment_never_reach_the_job_dir(tmp_path):
    output_root = tmp_path / "out"
    result = run_cli(["train", f"+logger.api_key={CLI_SECRET}", *TINY, "logger=wandb",
                      "module.hparams.proj_hidden_dim=64", f"output_root={output_root}"],
                     cwd=tmp_path, env=_wandb_env(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    job_dir = next((output_root / "train").iterdir())

    # wandb really ran and wrote its run folder (metadata, logs, the .wandb record) inside the job directory.
    assert list((job_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    # The saved config keeps the key's place but not its value.
    assert "api_key: <redacted>" in (job_dir / "config.yaml").read_text()
    assert _files_containing(job_dir, CLI_SECRET, WANDB_KEY) == []


def test_api_key_override_in_a_sweep_stays_out_of_the_sweep_dir(tmp_path):
    # The member fails at once on a forward that does not exist (cheap); the manifest, member directory and config
    # are written before that, which is what this checks.
    output_root = tmp_path / "out"
    result = run_cli(["sweep", f"+logger.api_key={CLI_SECRET}", "module.forward=method_zoo.missing_forward",
                      *TINY, f"output_root={output_root}", "-m"], cwd=tmp_path, env=_wandb_env(tmp_path))
    assert result.returncode == 1, result.stderr[-3000:]
    sweep_dir = next((output_root / "sweeps").iterdir())
    assert (sweep_dir / "sweep.json").is_file()
    assert _files_containing(output_root, CLI_SECRET) == []
    # The failed member's log ends in the job runner's one-line error, not a traceback.
    (log,) = sweep_dir.glob("*/log.txt")
    lines = log.read_text().strip().splitlines()
    assert lines[-1].startswith("error: forward 'method_zoo.missing_forward' cannot be imported; known forwards: ")
    assert "Traceback" not in log.read_text()
    assert CLI_SECRET not in result.stdout and CLI_SECRET not in result.stderr
