"""A search sweep's trials in wandb, from real offline run files: each trial's run sits in the sweep's group, with
its parameters as ``search/<key>`` config, tags ``search`` and ``trial-N``, and its final state in the summary,
PRUNED included.

The sweep is real: ``orchestra sweep ... search=optuna`` runs trial 0 (COMPLETED); then two completed trials whose
probe top-1 was 1.0 at every validation are added to the study's journal and the budget is raised, so that the
worker's next trial, trained for real, is below the median at its first validation and the median pruner stops it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from orchestra_testkit import REPO, cli_command, subprocess_env, tiny_overrides

WANDB = REPO / ".venv" / "bin" / "wandb"
LR = "optim.lr"


def _wandb_home(root: Path) -> dict[str, str]:
    home = root / "wandb_home"
    return {"WANDB_CONFIG_DIR": str(home / "config"), "WANDB_CACHE_DIR": str(home / "cache"),
            "WANDB_DATA_DIR": str(home / "data"), "WANDB_ARTIFACT_DIR": str(home / "artifacts")}


def _run_and_summary(job_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run record and the merged summary of a trial's one offline run, read with wandb's own reader."""
    (folder,) = sorted((job_dir / "wandb").glob("offline-run-*"))
    out = subprocess.run([str(WANDB), "leet", "inspect", "--json", str(folder)], capture_output=True, text=True,
                         check=True, timeout=60)
    records = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    summary: dict[str, Any] = {}
    for record in records:
        if record["type"] == "summary":
            summary.update(record["summary"].get("update") or {})
    runs = [r["run"] for r in records if r["type"] == "run"]  # a later record carries tags set at the finish
    return runs[-1], summary


def _add_perfect_trials(sweep_dir: Path, count: int) -> None:
    """Completed trials that scored 1.0 at every validation: any real trial is below their median."""
    import optuna
    from optuna.distributions import json_to_distribution
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    section = json.loads((sweep_dir / "sweep.json").read_text())["search"]
    distributions = {k: json_to_distribution(v) for k, v in section["distributions"].items()}
    study = optuna.load_study(study_name="search",
                              storage=JournalStorage(JournalFileBackend(str(sweep_dir / "study.journal"))))
    for lr in (0.02, 0.03)[:count]:
        study.add_trial(optuna.trial.create_trial(params={LR: lr}, distributions=distributions, value=1.0,
                                                  intermediate_values={0: 1.0, 1: 1.0}))


@pytest.fixture(scope="module")
def search_sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("search_wandb")
    env = subprocess_env(HOME=str(root), **_wandb_home(root))
    overrides = [o for o in tiny_overrides(root / "out", "simclr", "trainer.max_epochs=2") if o != "logger=none"]
    sweep = subprocess.run([*cli_command(), "sweep", *overrides, "logger=wandb", f"{LR}=tag(log, interval(0.01, 0.1))",
                            "search=optuna", "search.trials=1", "search.parallel=1", "-m"],
                           cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert sweep.returncode == 0, sweep.stdout[-2000:] + sweep.stderr[-2000:]
    (sweep_dir,) = (root / "out" / "sweeps").iterdir()
    _add_perfect_trials(sweep_dir, 2)
    manifest = json.loads((sweep_dir / "sweep.json").read_text())
    manifest["search"]["trials"] = 4  # one more trial for the worker to ask
    (sweep_dir / "sweep.json").write_text(json.dumps(manifest, indent=2))
    worker = subprocess.run([sys.executable, "-m", "orchestra.search.worker", str(sweep_dir / "worker-0")],
                            cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert worker.returncode == 0, worker.stdout[-2000:] + worker.stderr[-2000:]
    return sweep_dir


def test_trial_runs_are_grouped_under_the_sweep_with_params_as_config(search_sweep):
    for number in (0, 3):
        job_dir = search_sweep / "trials" / f"{number:04d}"
        results = json.loads((job_dir / "results.json").read_text())
        run, _ = _run_and_summary(job_dir)
        assert run["run_group"] == search_sweep.name and run["display_name"] == f"trial-{number}"
        assert {"search", f"trial-{number}", "method=simclr", "trainer.max_epochs=2"} <= set(run["tags"])
        assert not any(t.startswith("search=") or "interval" in t for t in run["tags"])
        config = run["config"]["update"]
        assert config[f"search/{LR}"] == results["search"]["params"][LR]
        assert config["optim"]["lr"] == pytest.approx(results["search"]["params"][LR])  # what it trained with


def test_completed_and_pruned_trials_say_their_state_in_the_summary(search_sweep):
    completed = json.loads((search_sweep / "trials" / "0000" / "results.json").read_text())
    pruned = json.loads((search_sweep / "trials" / "0003" / "results.json").read_text())
    assert completed["state"] == "COMPLETED" and len(completed["history"]) == 2
    assert pruned["state"] == "PRUNED" and pruned["pruned_at"]["epoch"] == 0 and len(pruned["history"]) == 1

    run, summary = _run_and_summary(search_sweep / "trials" / "0000")
    assert summary["state"] == "COMPLETED" and "pruned" not in run["tags"]
    assert summary["search/objective/probe/top1"] == pytest.approx(completed["search"]["objective"]["value"],
                                                                   abs=1e-6)
    run, summary = _run_and_summary(search_sweep / "trials" / "0003")
    assert summary["state"] == "PRUNED" and "pruned" in run["tags"]
    assert summary["search/pruned_at/epoch"] == 0 and summary["search/pruned_at/step"] == pruned["pruned_at"]["step"]
    assert summary["search/objective/probe/top1"] == pytest.approx(pruned["history"][-1]["metrics"]["probe/top1"],
                                                                   abs=1e-6)


def test_the_report_counts_the_real_pruned_trial(search_sweep):
    from orchestra.reporting.search_summary import build_search

    report = build_search(search_sweep)
    pruned = json.loads((search_sweep / "trials" / "0003" / "results.json").read_text())
    # 2 epochs planned, 1 run: the saving is the one epoch it did not run, at its measured rate
    assert report.saving.pruned == 1 and report.saving.epochs == 1
    assert report.saving.device_hours == pytest.approx(pruned["device_hours"])
    # the journal's two added trials have no results files: the report's numbers come from results files only
    assert report.best.number == 0


def test_sync_finds_the_trials_runs(search_sweep, tmp_path):
    env = subprocess_env(HOME=str(tmp_path), WANDB_API_KEY="FAKEWANDBSECRET" + "0" * 30, **_wandb_home(tmp_path))
    dry = subprocess.run([*cli_command(), "sync", str(search_sweep), "--dry-run"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    folders = sorted(search_sweep.glob("trials/*/wandb/offline-run-*"))
    assert len(folders) == 2 and all(str(folder) in dry.stdout for folder in folders)
