"""``orchestra sweep``: expand, validate every member, write job dirs and the manifest, hand them to a launcher."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import OmegaConf

from launch import manifest
from launch.launcher import Launcher, SchedulerError, launcher_for
from orchestra.errors import UserError
from orchestra.jobstate.job_dir import stamp, unique_dir, write_job_config

JOB_ENTRY = [sys.executable, "-m", "orchestra.job"]
WORKER_ENTRY = [sys.executable, "-m", "orchestra.search.worker"]  # a search sweep's members are its workers
# Called with the sweep directory once every member has ended (the CLI prints the report): the sweep room never
# imports reporting, which reads sweeps through sweep.records.
SweepEnded = Callable[[Path], object]


def _member_name(index: int, member: list[str], swept: list[str]) -> str:
    values = dict(o.split("=", 1) for o in member if "=" in o)
    label = "_".join(f"{k}={values[k]}" for k in swept if k in values)
    return f"{index:03d}-" + re.sub(r"[^A-Za-z0-9_.=-]+", "-", label)[:80] if label else f"{index:03d}"


def entry_of(sweep: manifest.Sweep) -> list[str]:
    return WORKER_ENTRY if sweep.kind == "search" else JOB_ENTRY


def launch_members(sweep_dir: Path, members: list[manifest.Member], settings: dict, on_end: SweepEnded,
                   entry: list[str] = JOB_ENTRY) -> int:
    """Start ``members`` with the sweep's launcher; a local sweep blocks and ends in ``on_end`` (the report), a
    SLURM one returns once queued (or follows it with ``launcher.wait``)."""
    launcher = launcher_for(str(settings["name"]))
    try:
        submission = launcher.submit(sweep_dir, members, settings, entry)
    except SchedulerError as err:
        raise UserError(str(err)) from None
    if not submission.finished:
        print(f"submitted {len(submission.job_ids)} member(s) as SLURM array {submission.job_ids[0].array}")
        if settings.get("wait"):
            from orchestra.sweep.control import follow

            return follow(sweep_dir, on_end)
        print(f"follow it with:  orchestra status {sweep_dir}")
        return 0
    if submission.interrupted:
        print(f"sweep interrupted; every member that ran saved its progress. Resume with:  orchestra resume "
              f"{sweep_dir}", file=sys.stderr, flush=True)
        return 130
    on_end(sweep_dir)
    failed = [i for i, code in submission.exit_codes.items() if code != 0]
    if failed:
        print(f"{len(failed)} member(s) did not complete; see log.txt in their job directories", file=sys.stderr)
    return 1 if failed else 0


# Keys that shape a member's SLURM allocation: the sweep is ONE array, and every task of an array gets one shape.
ALLOCATION_KEYS = ("launcher", "trainer", "trainer.devices", "trainer.num_nodes", "trainer.accelerator")


def _refuse_swept_allocation(swept: list[str]) -> None:
    shaped = [k for k in swept if k.lstrip("+~") in ALLOCATION_KEYS or k.lstrip("+~").startswith("launcher.")]
    if shaped:
        raise UserError(f"{', '.join(shaped)} would give members different SLURM allocations, but a sweep is one "
                        f"job array of one shape; run one sweep per value (e.g. {shaped[0]}=<one value>)")


def print_script(runner: Launcher, sweep_dir: Path, launcher: dict, count: int) -> None:
    """A dry run's sbatch script, for launchers that have one."""
    script = runner.script(sweep_dir, launcher, count)
    if script:
        print("\nsbatch script:\n" + script)


def check_launcher(runner: Launcher, launcher: dict) -> None:
    """The launcher's own readiness check (e.g. SLURM reachable) as one line, before anything is written."""
    try:
        runner.check(launcher)
    except SchedulerError as err:
        raise UserError(str(err)) from None


def sweep(overrides: list[str], dry_run: bool, on_end: SweepEnded) -> int:
    from orchestra.config.compose import SECRET_KEY, expand, redact_overrides
    from orchestra.config.members import MemberConfigs
    from orchestra.search.space import refuse_search_without_optuna, search_choice

    if search_choice(overrides):
        from orchestra.sweep.search_sweep import search_sweep

        return search_sweep(overrides, dry_run, on_end)
    refuse_search_without_optuna(overrides)
    members = expand(overrides)
    configs = MemberConfigs(members)  # every member is validated before anything runs
    first = configs.config(0)
    members = [redact_overrides(m) for m in members]  # secrets never reach the manifest, dir names or terminal
    values = [dict(o.split("=", 1) for o in m if "=" in o) for m in members]
    keys = list(dict.fromkeys(k for v in values for k in v if not SECRET_KEY.search(k)))
    swept = [k for k in keys if len({v.get(k) for v in values}) > 1] or keys[:1]
    launcher = OmegaConf.to_container(first.launcher, resolve=True)
    if launcher["name"] == "slurm":
        _refuse_swept_allocation([k for k in keys if len({v.get(k) for v in values}) > 1])
    sweep_dir = unique_dir(Path(first.output_root) / "sweeps" / stamp()).resolve()
    entries = [manifest.Member(index=i, overrides=m, job_dir=str(sweep_dir / _member_name(i, m, swept)))
               for i, m in enumerate(members)]
    runner = launcher_for(str(launcher["name"]))
    if dry_run:
        print(f"sweep directory: {sweep_dir}  ({len(members)} members, launcher={launcher['name']})")
        for entry in entries:
            print(f"  [{entry.index}] {' '.join(entry.overrides)}  ->  {entry.job_dir}")
        print_script(runner, sweep_dir, launcher, len(entries))
        return 0
    check_launcher(runner, launcher)
    resolved = [configs.resolved(entry.index, job_dir=entry.job_dir) for entry in entries]  # all, before writing
    for entry, container in zip(entries, resolved, strict=True):
        write_job_config(Path(entry.job_dir), container)
    command = ["orchestra", "sweep", *redact_overrides(overrides)]
    manifest.create(manifest.Sweep(sweep_dir=str(sweep_dir), command=command, launcher=str(launcher["name"]),
                                   created_at=manifest.now(), members=entries, swept_keys=swept,
                                   launcher_settings=launcher))
    where = "SLURM" if launcher["name"] == "slurm" else f"local, {launcher.get('parallelism', 1)} at a time"
    print(f"sweep directory: {sweep_dir}  ({len(members)} members, {where})", flush=True)
    return launch_members(sweep_dir, entries, launcher, on_end)
