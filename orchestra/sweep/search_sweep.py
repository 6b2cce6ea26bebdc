"""``orchestra sweep ... search=optuna -m``: a search sweep, whose members are ``search.parallel`` workers.

Everything is checked first (``orchestra.search.plan``); then the sweep directory gets the study
(``study.journal``), the manifest (``kind: "search"`` and a ``search`` section), one directory per worker
(``worker-<i>``, its log and its results.json) and, as workers ask for them, ``trials/NNNN`` job directories.
The workers go to the sweep's launcher like grid members: locally all ``search.parallel`` at once (the command
returns when the budget is spent), on SLURM as one job array.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from launch import manifest
from launch.launcher import launcher_for
from orchestra.jobstate.job_dir import stamp, unique_dir
from orchestra.sweep.create import (
    WORKER_ENTRY,
    SweepEnded,
    _refuse_swept_allocation,
    check_launcher,
    launch_members,
    print_script,
)


def search_sweep(overrides: list[str], dry_run: bool, on_end: SweepEnded) -> int:
    from orchestra.config.compose import redact_overrides
    from orchestra.search import study
    from orchestra.search.plan import plan, save_overrides
    from orchestra.search.worker import worker_dir

    search, configs = plan(overrides)
    first = configs.config(0)
    launcher = OmegaConf.to_container(first.launcher, resolve=True)
    settings = search.settings
    parallel = int(settings["parallel"])
    if launcher["name"] == "slurm":
        _refuse_swept_allocation(list(search.space.distributions))  # every array task has one shape
    else:
        launcher["parallelism"] = parallel  # every worker at once: each runs one trial at a time
    sweep_dir = unique_dir(Path(first.output_root) / "sweeps" / stamp()).resolve()
    fixed = redact_overrides(search.space.fixed)
    workers = [manifest.Member(index=i, overrides=fixed, job_dir=str(worker_dir(sweep_dir, i)))
               for i in range(parallel)]
    runner = launcher_for(str(launcher["name"]))
    space = "  ".join(f"{k}={v}" for k, v in search.space.text.items())
    summary = (f"{settings['trials']} trials, {parallel} workers, sampler {settings['sampler']} (seed "
               f"{settings['seed']}), pruner {settings['pruner']['name']}, objective "
               f"{settings['objective']['direction']} {settings['objective']['metric']}")
    if dry_run:
        print(f"sweep directory: {sweep_dir}  (search: {summary}, launcher={launcher['name']})")
        print(f"  space: {space}")
        for worker in workers:
            print(f"  [worker {worker.index}] {' '.join(WORKER_ENTRY[1:])} {worker.job_dir}")
        print_script(runner, sweep_dir, launcher, len(workers))
        return 0
    check_launcher(runner, launcher)
    for worker in workers:
        Path(worker.job_dir).mkdir(parents=True)
    save_overrides(sweep_dir, search.space.fixed)
    study.create(sweep_dir, settings)
    command = ["orchestra", "sweep", *redact_overrides(overrides)]
    manifest.create(manifest.Sweep(sweep_dir=str(sweep_dir), command=command, launcher=str(launcher["name"]),
                                   created_at=manifest.now(), members=workers,
                                   swept_keys=list(search.space.distributions), launcher_settings=launcher,
                                   kind="search", search=search.manifest_section(fixed)))
    print(f"sweep directory: {sweep_dir}  (search: {summary})\n  space: {space}", flush=True)
    return launch_members(sweep_dir, workers, launcher, on_end, entry=WORKER_ENTRY)
