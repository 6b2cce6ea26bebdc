"""User mistakes reach the terminal as one `error:` line and exit code 2.

Config mistakes fail before any training starts, so their stderr must be exactly that one line; they are checked
in-process through ``orchestra.cli.main`` (what the console script calls), and once through the installed
``orchestra`` script itself. Mistakes that only
show once training runs (a forward without a loss, the wrong number of views, a probe reading a missing key) happen
after Lightning has printed its own info lines, so there we require exactly one `error:` line, at the end, and no
traceback.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from orchestra_testkit import TINY, read_json, run_cli, run_cli_concurrently, subprocess_env

from orchestra.cli import main

SIX_METHODS = ("simclr", "nnclr", "byol", "vicreg", "barlow_twins", "supervised")


def _single_error_line(stderr: str) -> str:
    """The whole of stderr must be one line starting with 'error:'."""
    lines = stderr.strip("\n").splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def _final_error_line(stderr: str) -> str:
    """Training-time errors: Lightning's info lines may come first, but no traceback and one final error line."""
    assert "Traceback" not in stderr, f"a traceback leaked to the user:\n{stderr}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, f"expected exactly one error line, got:\n{stderr}"
    assert lines[-1] == errors[0], f"the error line must be the last thing printed:\n{stderr}"
    return errors[0]


def _failed_results(output_root: Path) -> dict:
    """The job that a training-time error stopped records it as FAILED in its results file."""
    job_dirs = list((output_root / "train").iterdir())
    assert len(job_dirs) == 1
    return read_json(job_dirs[0] / "results.json")


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    """``orchestra ARGS`` in this process: (exit status, stdout, stderr)."""
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_the_six_methods_and_exits_zero(capsys):
    code, out, err = _run(["--help"], capsys)
    assert code == 0, err
    method_line = next(line for line in out.splitlines() if line.strip().startswith("method "))
    for method in SIX_METHODS:
        assert method in method_line
    assert "orchestra sweep" in out


def test_installed_entry_point_reports_a_config_mistake_as_one_line(tmp_path):
    """The one subprocess: the console script itself, its exit status and its stderr."""
    result = run_cli(["train", "method=simclrr", f"output_root={tmp_path}"], cwd=tmp_path)
    assert result.returncode == 2
    line = _single_error_line(result.stderr)
    assert "simclrr" in line
    assert not (tmp_path / "train").exists()


def test_unknown_method_lists_the_known_ones(tmp_path, capsys):
    code, _, err = _run(["train", "method=simclrr", f"output_root={tmp_path}"], capsys)
    assert code == 2
    line = _single_error_line(err)
    assert "simclrr" in line
    for method in SIX_METHODS:
        assert method in line
    # Rejected before a job directory exists.
    assert not (tmp_path / "train").exists()


def test_misspelt_config_key_points_at_the_right_one(tmp_path, capsys):
    code, _, err = _run(["train", "trainer.max_epoch=3", f"output_root={tmp_path}"], capsys)
    assert code == 2
    line = _single_error_line(err)
    assert "trainer.max_epoch" in line
    assert "max_epochs" in line  # the key the user meant is among the listed ones
    assert not (tmp_path / "train").exists()


def test_experiment_without_plus_says_to_append_it(tmp_path, capsys):
    # experiment is not in the defaults list: Hydra's own fix (+experiment=...) comes back as the one line
    code, _, err = _run(["train", "experiment=fashion_simclr", f"output_root={tmp_path}"], capsys)
    assert code == 2
    assert "+experiment=fashion_simclr" in _single_error_line(err)
    assert not (tmp_path / "train").exists()


def test_unparseable_override_is_quoted_back(tmp_path, capsys):
    code, _, err = _run(["train", "trainer.max_epochs=[1,2", f"output_root={tmp_path}"], capsys)
    assert code == 2
    line = _single_error_line(err)
    assert "'trainer.max_epochs=[1,2'" in line


@pytest.fixture(scope="module")
def training_time_errors(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    """The three mistakes that surface only once a job runs, each in its own output root, run side by side."""
    roots = {name: tmp_path_factory.mktemp(name) for name in ("no_loss", "views", "probe_key")}
    # A user forward that only embeds: legal at val, a mistake at train.
    helpers = tmp_path_factory.mktemp("helpers")
    (helpers / "tests_helpers_module.py").write_text(
        "def fn(self, batch, stage):\n"
        "    return {'embedding': self.backbone(batch['image'])}\n"
    )
    small = [*TINY, "module.hparams.proj_hidden_dim=64"]
    runs = {
        "no_loss": (["train", "module.forward=tests_helpers_module.fn", *small],
                    subprocess_env(extra_paths=(str(helpers),))),
        "views": (["train", "method=simclr", "data.views=3", *small], None),
        "probe_key": (["train", "callbacks.probe.input=nonexistent", *small], None),
    }
    results = run_cli_concurrently({name: ([*args, f"output_root={roots[name]}"], roots[name], env)
                                    for name, (args, env) in runs.items()})
    return {name: (results[name], roots[name]) for name in runs}


def test_missing_dataset_folder_names_the_path(tmp_path, capsys):
    missing = tmp_path / "nonexistent"
    code, _, err = _run(["train", "data=cifar10", f"data.root={missing}", *TINY, f"output_root={tmp_path}"], capsys)
    assert code == 2, err
    # The config's validation looks for the dataset before a job directory exists.
    line = _single_error_line(err)
    assert str(missing) in line
    assert "data.download=true" in line  # and says how to fix it
    assert not (tmp_path / "train").exists()


def test_forward_without_loss_says_loss_is_missing(training_time_errors):
    result, root = training_time_errors["no_loss"]
    assert result.returncode == 2, result.stderr
    line = _final_error_line(result.stderr)
    assert "'loss'" in line
    assert "fn returned" in line and "embedding" in line  # names the forward and what it did return
    assert _failed_results(root)["state"] == "FAILED"


def test_two_view_method_given_three_views_says_both_numbers(training_time_errors):
    result, root = training_time_errors["views"]
    assert result.returncode == 2, result.stderr
    line = _final_error_line(result.stderr)
    assert "2 views" in line
    assert "has 3" in line
    assert "data.views=2" in line  # the fix
    results = _failed_results(root)
    assert results["state"] == "FAILED"
    assert "2 views" in results["error"]


def test_probe_reading_a_missing_key_lists_the_keys_that_exist(training_time_errors):
    result, root = training_time_errors["probe_key"]
    assert result.returncode == 2, result.stderr
    line = _final_error_line(result.stderr)
    assert "'nonexistent'" in line
    assert "embedding" in line and "label" in line
    assert _failed_results(root)["state"] == "FAILED"


def test_sweep_without_multirun_flag_asks_for_it(tmp_path, capsys):
    code, _, err = _run(["sweep", "method=simclr,byol", f"output_root={tmp_path}"], capsys)
    assert code == 2
    line = _single_error_line(err)
    assert "-m" in line
    assert not (tmp_path / "sweeps").exists()


def test_slurm_sweep_over_devices_is_refused_as_one_array_has_one_shape(tmp_path, capsys):
    code, _, err = _run(["sweep", "method=simclr", "trainer.devices=1,2", "launcher=slurm", "-m", "--dry-run",
                         f"output_root={tmp_path}"], capsys)
    assert code == 2
    line = _single_error_line(err)
    assert "trainer.devices" in line and "one sweep per value" in line
    assert not (tmp_path / "sweeps").exists()
    # The same sweep locally is fine: each local member starts its own processes.
    code, _, err = _run(["sweep", "method=simclr", "trainer.devices=1,2", "-m", "--dry-run",
                         f"output_root={tmp_path}"], capsys)
    assert code == 0, err
