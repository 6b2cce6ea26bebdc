"""`orchestra sweep ... search=optuna -m` on the local launcher: workers, an Optuna journal study, pruning, status,
cancel and resume, and the one-line answers to bad search input."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from orchestra_testkit import SMALL_HEADS, cli_command, read_json, run_cli, run_cli_concurrently, subprocess_env

EPOCHS = 3
# Tiny data, three epochs (a pruned trial can stop before the last), a learning rate over five decades so that the
# trials differ enough for the median pruner to stop some after their first validation.
SEARCH = ["method=simclr", "data.train_limit=256", "data.val_limit=128", "data.batch_size=64",
          "data.eval_batch_size=256", f"trainer.max_epochs={EPOCHS}", "logger=none", *SMALL_HEADS["simclr"],
          "optim.lr=tag(log, interval(1e-5, 1.0))", "search=optuna", "search.pruner.name=median",
          "search.pruner.startup_trials=1"]


def _study(sweep_dir: Path):
    import optuna

    from orchestra.search.study import storage

    return optuna.load_study(study_name="search", storage=storage(sweep_dir))


def _only_sweep(output_root: Path) -> Path:
    sweeps = list((output_root / "sweeps").iterdir())
    assert len(sweeps) == 1, sweeps
    return sweeps[0]


def test_six_trials_two_workers_with_a_pruner(tmp_path):
    from optuna.trial import TrialState

    output_root = tmp_path / "out"
    result = run_cli(["sweep", *SEARCH, "search.trials=6", "search.parallel=2", f"output_root={output_root}", "-m"],
                     cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sweep_dir = _only_sweep(output_root)

    sweep = read_json(sweep_dir / "sweep.json")
    assert sweep["kind"] == "search"
    assert sweep["search"]["space"] == {"optim.lr": "tag(log, interval(1e-5, 1.0))"}
    assert (sweep["search"]["sampler"], sweep["search"]["seed"], sweep["search"]["trials"]) == ("tpe", 0, 6)
    assert sweep["search"]["objective"] == {"metric": "probe/top1", "direction": "maximize"}
    assert [m["state"] for m in sweep["members"]] == ["COMPLETED", "COMPLETED"]
    assert [Path(m["job_dir"]).name for m in sweep["members"]] == ["worker-0", "worker-1"]

    trials = _study(sweep_dir).get_trials()
    assert [t.number for t in trials] == list(range(6))  # the budget, no more: nothing asked twice or beyond it
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), [t.state for t in trials]
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}  # both workers asked for trials
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert pruned and complete, result.stdout[-3000:]
    assert sorted(p.name for p in (sweep_dir / "trials").iterdir()) == [f"{n:04d}" for n in range(6)]

    for trial in trials:
        job_dir = sweep_dir / "trials" / f"{trial.number:04d}"
        assert trial.user_attrs["job_dir"] == str(job_dir)
        results = read_json(job_dir / "results.json")
        lr = trial.params["optim.lr"]
        assert 1e-5 <= lr <= 1.0
        config = (job_dir / "config.yaml").read_text()
        assert f"lr: {lr}" in config  # the trial's own parameter in its config
        assert results["search"]["trial"] == trial.number
        assert results["search"]["params"] == {"optim.lr": lr}
        history = results["history"]
        if trial.state == TrialState.COMPLETE:
            assert results["state"] == "COMPLETED" and "pruned_at" not in results
            assert len(history) == EPOCHS
            assert trial.value == results["metrics"]["probe/top1"] == history[-1]["metrics"]["probe/top1"]
            assert results["search"]["objective"] == {"metric": "probe/top1", "value": trial.value,
                                                      "direction": "maximize"}
        else:  # stopped before max_epochs, at the validation the pruner saw
            assert results["state"] == "PRUNED"
            assert len(history) < EPOCHS
            assert results["pruned_at"] == {"epoch": history[-1]["epoch"], "step": history[-1]["step"]}
            reported = trial.intermediate_values[history[-1]["epoch"]]
            assert round(reported, 6) == history[-1]["metrics"]["probe/top1"]  # the history keeps 6 digits
            assert "pruned by the search" in (job_dir / "log.txt").read_text()

    # the report the sweep ended in names the best trial of the results files (not of the study's own record)
    finished = {t.number: read_json(sweep_dir / "trials" / f"{t.number:04d}" / "results.json") for t in trials}
    number, best_results = max(((n, r) for n, r in finished.items() if r["state"] == "COMPLETED"),
                               key=lambda item: item[1]["metrics"]["probe/top1"])
    report_md = (sweep_dir / "report.md").read_text()
    assert f"best trial: {number} — probe/top1 {best_results['metrics']['probe/top1']:.4f}" in report_md, report_md

    # status: the trials table without torch (tests/orchestra/test_cli_commands checks the import), PRUNED with
    # where it stopped
    status = run_cli(["status", str(sweep_dir)], cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    assert f"trials: 6 of 6 asked ({len(complete)} COMPLETE, {len(pruned)} PRUNED)" in status.stdout
    best = max(complete, key=lambda t: t.value)
    assert f"best: trial {best.number}, probe/top1 {best.value:.4f}" in status.stdout
    for trial in pruned:
        epoch = trial.intermediate_values and max(trial.intermediate_values)
        row = next(line for line in status.stdout.splitlines() if line.startswith(f"{trial.number} "))
        assert "PRUNED" in row and f"epoch {epoch} (step" in row, status.stdout
    # resume leaves finished trials alone: nothing to do
    resume = run_cli(["resume", str(sweep_dir)], cwd=tmp_path)
    assert resume.returncode == 0 and "nothing to resume" in resume.stdout, resume.stdout + resume.stderr
    assert len(_study(sweep_dir).get_trials()) == 6


def test_cancel_stops_the_search_and_resume_finishes_the_interrupted_trial(tmp_path):
    from optuna.trial import TrialState

    output_root = tmp_path / "out"
    slow = [o for o in SEARCH if not o.startswith("trainer.max_epochs")] + [
        "trainer.max_epochs=4", "search.pruner.name=none", "search.trials=2", "search.parallel=1",
        "+callbacks.slow._target_=orchestra_testkit.SlowBatches", "+callbacks.slow.seconds=0.5",
        "+callbacks.slow.first_start_only=true"]
    sweep = subprocess.Popen([*cli_command(), "sweep", *slow, f"output_root={output_root}", "-m"], cwd=tmp_path,
                             env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        history = []
        while time.monotonic() < deadline and not history:  # the first trial has validated once
            time.sleep(0.5)
            path = next(output_root.glob("sweeps/*/trials/0000/results.json"), None)
            try:
                history = read_json(path).get("history", []) if path else []
            except (OSError, json.JSONDecodeError):
                history = []
        assert history, "the first trial never validated"
        sweep_dir = _only_sweep(output_root)
        cancel = run_cli(["cancel", str(sweep_dir)], cwd=tmp_path)
        assert cancel.returncode == 0 and "cancelled 1 member(s)" in cancel.stdout, cancel.stdout + cancel.stderr
        out, _ = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    assert (sweep_dir / "search.stop").is_file()
    trials = _study(sweep_dir).get_trials()
    assert [(t.number, t.state) for t in trials] == [(0, TrialState.RUNNING)], out[-3000:]
    first = read_json(sweep_dir / "trials" / "0000" / "results.json")
    assert first["state"] == "PREEMPTED", out[-3000:]  # saved at a batch boundary, resumable
    status = run_cli(["status", str(sweep_dir)], cwd=tmp_path).stdout
    assert "trials: 1 of 2 asked (1 RUNNING); stopped by orchestra cancel" in status, status
    worker_row = next((line for line in status.splitlines() if line.startswith("0 ") and "worker-0" in line), "")
    assert "CANCELLED" in worker_row, status

    resume = run_cli(["resume", str(sweep_dir)], cwd=tmp_path, timeout=600)
    assert resume.returncode == 0, resume.stdout[-3000:] + resume.stderr[-3000:]
    assert not (sweep_dir / "search.stop").exists()
    trials = _study(sweep_dir).get_trials()
    assert [(t.number, t.state) for t in trials] == [(0, TrialState.COMPLETE), (1, TrialState.COMPLETE)]
    resumed = read_json(sweep_dir / "trials" / "0000" / "results.json")
    assert resumed["attempts"] == 2 and len(resumed["history"]) == 4  # one run of 4 epochs, over two attempts
    assert [r["epoch"] for r in resumed["history"]] == [0, 1, 2, 3]
    assert "resuming from" in (sweep_dir / "trials" / "0000" / "log.txt").read_text()
    assert trials[0].value == resumed["metrics"]["probe/top1"]


BAD = {
    "unknown key": (["optim.lrx=interval(0.1, 1.0)", "search=optuna"], "names a key that is not in the config"),
    "low >= high": (["optim.lr=interval(0.1, 0.01)", "search=optuna"], "interval needs low < high"),
    "log <= 0": (["optim.lr=tag(log, interval(0, 0.1))", "search=optuna"], "a log scale needs bounds > 0"),
    "no expression": (["optim.lr=0.1", "search=optuna"], "search=optuna needs at least one search expression"),
    "no search": (["optim.lr=interval(0.01, 0.1)"],
                  "is a search expression, which needs a search sweeper: add search=optuna"),
    "unknown metric": (["optim.lr=interval(0.01, 0.1)", "search=optuna", "search.objective.metric=linear/top1"],
                       "search.objective.metric 'linear/top1' is not a metric the configured callbacks log; "
                       "metrics: knn/top1, probe/top1, train/loss"),
    "grid over an interval": (["optim.lr=interval(0.01, 0.1)", "search=optuna", "search.sampler=grid"],
                              "search.sampler=grid cannot enumerate"),
}


def test_bad_search_input_is_one_line_each(tmp_path):
    output_root = tmp_path / "out"
    runs = {key: (["sweep", *args, f"output_root={output_root}", "-m"], tmp_path, None)
            for key, (args, _) in BAD.items()}
    results = run_cli_concurrently(runs)
    for key, (_, expected) in BAD.items():
        result = results[key]
        assert result.returncode == 2, (key, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (key, result.stderr)
        assert expected in lines[0], (key, lines[0])
    assert not output_root.exists()  # nothing written before the input was checked


def test_grammar_maps_to_optuna_distributions():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from orchestra.search.space import parse_space

    space = parse_space(["method=simclr", "optim.lr=tag(log, interval(1e-4, 1e-1))", "seed=range(0, 10, 3)",
                         "optim.name=adamw,sgd", "data.batch_size=choice(32, 64)",
                         "optim.warmup_epochs=tag(int, interval(0, 4))", "search=optuna"])
    assert space.fixed == ["method=simclr", "search=optuna"]
    assert space.distributions == {
        "optim.lr": FloatDistribution(1e-4, 1e-1, log=True),
        "seed": IntDistribution(0, 9, step=3),  # 0, 3, 6, 9: stop excluded, as in Python
        "optim.name": CategoricalDistribution(["adamw", "sgd"]),  # a comma list is a choice, as in Hydra's sweeper
        "data.batch_size": CategoricalDistribution([32, 64]),
        "optim.warmup_epochs": IntDistribution(0, 4),
    }
    assert space.text["optim.lr"] == "tag(log, interval(1e-4, 1e-1))"


def test_grid_sampler_gives_every_point_once_to_workers_asking_together(tmp_path):
    from optuna.distributions import CategoricalDistribution, IntDistribution

    from orchestra.search import study

    settings = {"sampler": "grid", "seed": 3, "objective": {"direction": "maximize"}, "pruner": {"name": "none"}}
    study.create(tmp_path, settings)
    grid = {"a": [1, 2, 3], "b": ["x", "y"]}
    distributions = {"a": IntDistribution(1, 3), "b": CategoricalDistribution(["x", "y"])}
    points = []
    for number in range(6):  # none is told: all six run at once
        trial = study.load(tmp_path, settings, sampler=study.make_sampler(settings, number, grid)).ask(distributions)
        points.append((trial.params["a"], trial.params["b"]))
    assert sorted(points) == [(a, b) for a in (1, 2, 3) for b in ("x", "y")]


def test_a_pruned_job_counts_as_finished_for_status_and_resume(tmp_path):
    from launch import manifest
    from orchestra.sweep.control import resume_plan
    from orchestra.sweep.records import MemberRecord, member_state

    member = manifest.Member(index=0, overrides=[], job_dir=str(tmp_path / "000"), state="RUNNING",
                             job_ids=["slurm:7_0"])
    # whatever the scheduler says afterwards (its job ended cleanly), the job's own PRUNED stands
    assert member_state(member, {"slurm:7_0": {"state": "COMPLETED"}}, {"state": "PRUNED"}) == "PRUNED"
    records = [MemberRecord(member=member, job_dir=tmp_path, state="PRUNED", results={}, scheduler={})]
    assert resume_plan(records) == ([], [])  # never run again
