"""Sweeps written by hand with launch.manifest, members in any state and results files with any content: for the
readers (status, report, resume, cancel, eval), no training needed.

Members are local ones whose process is gone (job id ``local:999999999`` cannot be a live pid), so their state is
what the manifest and their results files say.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from launch import manifest

DEAD_LOCAL_JOB = "local:999999999"


def results_of(state: str, knn: float = 0.5, **extra: Any) -> dict[str, Any]:
    """A results file as a job body writes it; numbers only when the member completed."""
    results: dict[str, Any] = {"state": state, "attempts": 1, "method": "simclr", "wall_time_s": 12.0,
                               "device_hours": 0.0033, "peak_memory_mb": 100.0,
                               "history": [{"epoch": 0, "step": 10, "metrics": {"knn/top1": knn}}]}
    if state == "COMPLETED":
        results["metrics"] = {"knn/top1": knn, "probe/top1": knn + 0.1}
    return {**results, **extra}


def make_sweep(root: Path, members: list[tuple[list[str], str, dict[str, Any] | None]],
               swept_keys: list[str] | None = None, job_ids: list[str] | None = None) -> Path:
    """A sweep directory under ``root``: one (overrides, manifest state, results or None) per member, each with a
    job dir holding config.yaml and, unless None, results.json."""
    sweep_dir = root / "sweeps" / "2024-01-01_00-00-00"
    entries = []
    for index, (overrides, state, results) in enumerate(members):
        job_dir = sweep_dir / f"{index:03d}"
        job_dir.mkdir(parents=True)
        (job_dir / "config.yaml").write_text("seed: 0\n")
        if results is not None:
            (job_dir / "results.json").write_text(json.dumps(results))
        entries.append(manifest.Member(index=index, overrides=overrides, job_dir=str(job_dir), state=state,
                                       attempts=1, job_ids=list(job_ids or [DEAD_LOCAL_JOB]),
                                       finished_at=manifest.now()))
    keys = swept_keys or sorted({o.split("=", 1)[0] for m in members for o in m[0]})
    manifest.create(manifest.Sweep(sweep_dir=str(sweep_dir), command=["sweep", "-m"], launcher="local",
                                   created_at=manifest.now(), members=entries, swept_keys=keys,
                                   launcher_settings={"name": "local"}))
    return sweep_dir


def three_completed(root: Path) -> Path:
    """simclr seeds 0 and 1 and byol seed 0, all COMPLETED (kNN 0.5, 0.7, 0.6)."""
    return make_sweep(root, [(["method=simclr", "seed=0"], "COMPLETED", results_of("COMPLETED", 0.5)),
                             (["method=simclr", "seed=1"], "COMPLETED", results_of("COMPLETED", 0.7)),
                             (["method=byol", "seed=0"], "COMPLETED", results_of("COMPLETED", 0.6))])


SEARCH_SPACE = {"optim.lr": "tag(log, interval(1e-4, 1e-1))",
                "module.simclr_loss.temperature": "interval(0.05, 1.0)"}


def make_search_sweep(root: Path, trials: list[dict[str, Any]], max_epochs: int = 10,
                      metric: str = "probe/top1", direction: str = "maximize") -> Path:
    """A search sweep as `orchestra sweep ... search=optuna` leaves it: sweep.json with kind "search", the study in
    study.journal (name "search") and trials/NNNN/ job dirs. Each trial is a dict with ``lr``, ``temperature``,
    ``state`` (COMPLETED, PRUNED, FAILED, RUNNING or PENDING), ``value`` (the objective, or where a pruned one
    stopped), and for PRUNED ``epoch``/``step``; ``device_hours`` defaults to 0.01 per epoch run."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState, create_trial

    sweep_dir = root / "sweeps" / "2024-01-01_00-00-00"
    sweep_dir.mkdir(parents=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="search", direction=direction,
                                storage=JournalStorage(JournalFileBackend(str(sweep_dir / "study.journal"))))
    distributions = {"optim.lr": FloatDistribution(1e-4, 1e-1, log=True),
                     "module.simclr_loss.temperature": FloatDistribution(0.05, 1.0)}
    states = {"COMPLETED": TrialState.COMPLETE, "PRUNED": TrialState.PRUNED, "FAILED": TrialState.FAIL,
              "RUNNING": TrialState.RUNNING, "PENDING": TrialState.WAITING}
    for number, spec in enumerate(trials):
        params = {"optim.lr": spec["lr"], "module.simclr_loss.temperature": spec["temperature"]}
        job_dir = sweep_dir / "trials" / f"{number:04d}"
        state, value = spec["state"], spec.get("value")
        epochs = spec["epoch"] + 1 if state == "PRUNED" else max_epochs
        history = [{"epoch": e, "step": 10 * (e + 1), "metrics": {metric: value}} for e in range(epochs)
                   if value is not None]
        study.add_trial(create_trial(
            params=params, distributions=distributions, state=states[state],
            value=value if state == "COMPLETED" else None,
            intermediate_values={h["step"]: value for h in history} if state == "PRUNED" else None,
            user_attrs={"worker": str(number % 2), "job_dir": str(job_dir)}))
        if state == "PENDING":
            continue
        job_dir.mkdir(parents=True)
        (job_dir / "config.yaml").write_text(f"seed: 0\ntrainer:\n  max_epochs: {max_epochs}\n")
        results: dict[str, Any] = {
            "state": state, "attempts": 1, "method": "simclr", "wall_time_s": 36.0 * epochs,
            "device_hours": spec.get("device_hours", 0.01 * epochs), "history": history,
            "search": {"trial": number, "params": params, "objective": {"metric": metric, "value": None}}}
        if state == "COMPLETED":
            results["metrics"] = {metric: value}
            results["search"]["objective"]["value"] = value
        if state == "PRUNED":
            results["pruned_at"] = {"step": spec["step"], "epoch": spec["epoch"]}
        if state == "FAILED":
            results["error"] = "RuntimeError: fabricated"
        (job_dir / "results.json").write_text(json.dumps(results))
    workers = [manifest.Member(index=i, overrides=[f"search.worker={i}"], job_dir=str(sweep_dir / f"worker-{i}"),
                               state="COMPLETED", attempts=1, job_ids=[DEAD_LOCAL_JOB]) for i in range(2)]
    command = ["orchestra", "sweep", "method=simclr", "data.train_limit=400",
               *(f"{k}={v}" for k, v in SEARCH_SPACE.items()), "search=optuna", f"search.trials={len(trials)}",
               "search.parallel=2", "-m"]
    manifest.create(manifest.Sweep(sweep_dir=str(sweep_dir), command=command, launcher="local",
                                   created_at=manifest.now(), members=workers, swept_keys=list(SEARCH_SPACE)))
    data = json.loads((sweep_dir / manifest.MANIFEST).read_text())
    fixed = [o for o in command[2:] if o.split("=", 1)[0] not in SEARCH_SPACE and o != "-m"]
    data.update(kind="search", search={"space": SEARCH_SPACE, "fixed": fixed, "added": [],
                                       "distributions": {k: optuna.distributions.distribution_to_json(d)
                                                         for k, d in distributions.items()},
                                       "sampler": "tpe", "seed": 0, "trials": len(trials),
                                       "parallel": 2, "objective": {"metric": metric, "direction": direction},
                                       "pruner": {"name": "median", "startup_trials": 2}})
    (sweep_dir / manifest.MANIFEST).write_text(json.dumps(data, indent=2))
    return sweep_dir
