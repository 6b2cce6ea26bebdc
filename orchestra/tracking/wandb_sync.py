"""``orchestra sync SWEEP_DIR``: upload the offline wandb runs of every member with ``wandb sync``.

A member requeued N times holds N offline folders of one run id; they go to ``wandb sync`` in one call, which
uploads the folders of one run in order of start time, so the member stays one run on the server.
Imports neither torch nor wandb: the upload itself is wandb's own command in a subprocess.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from orchestra.errors import UserError

OFFLINE_RUN_GLOB = "offline-run-*"


@dataclass(frozen=True)
class OfflineRun:
    folder: Path  # <job_dir>/wandb/offline-run-<time>-<run id>

    @property
    def run_id(self) -> str:
        return self.folder.name.rsplit("-", 1)[-1]

    @property
    def synced(self) -> bool:
        # `wandb sync` leaves <run file>.wandb.synced beside a run file it uploaded
        return any(self.folder.glob("*.wandb.synced"))


def job_dirs(target: Path) -> list[Path]:
    """The job directories of a sweep (from its manifest), or the one job directory given."""
    from launch import manifest

    if manifest.is_sweep(target):
        try:
            members = manifest.load(target).members
        except manifest.ManifestError as err:
            raise UserError(str(err)) from None
        trials = target / "trials"  # a search sweep: its members are workers, its runs are the trials'
        return [manifest.member_dir(target, m) for m in members] + (
            sorted(d for d in trials.iterdir() if d.is_dir()) if trials.is_dir() else [])
    if (target / "config.yaml").is_file():
        return [target]
    raise UserError(f"{target} is neither a sweep directory (sweep.json) nor a job directory (config.yaml); pass "
                    f"one made by orchestra sweep or orchestra train")


def offline_runs(target: Path) -> list[OfflineRun]:
    runs = []
    for job_dir in job_dirs(target):
        # folder names start with the start time, so sorting keeps each member's attempts in order
        runs += [OfflineRun(f) for f in sorted((job_dir / "wandb").glob(OFFLINE_RUN_GLOB)) if f.is_dir()]
    return runs


def _wandb_command() -> list[str]:
    beside_python = Path(sys.executable).parent / "wandb"
    if beside_python.exists():
        return [str(beside_python)]
    found = shutil.which("wandb")
    return [found] if found else [sys.executable, "-m", "wandb"]


def _listing(runs: list[OfflineRun]) -> None:
    for run in runs:
        print(f"  {run.folder}  (run {run.run_id})")


def sync(target: Path | str, dry_run: bool = False) -> int:
    from orchestra.tracking.wandb_login import LOGIN_HINT, has_login

    target = Path(target)
    if not target.is_dir():
        raise UserError(f"{target} is not a directory; pass a sweep directory (runs/sweeps/<time>)")
    runs = offline_runs(target.resolve())
    waiting = [r for r in runs if not r.synced]
    members = len({r.folder.parent.parent for r in waiting})
    if not waiting:
        done = len(runs)
        print(f"nothing to upload in {target}: {done} offline run(s) already synced" if done else
              f"nothing to upload in {target}: no offline wandb runs (were members trained with logger=wandb?)")
        return 0
    summary = f"{len(waiting)} offline run(s) of {members} member(s)"
    if dry_run:
        print(f"{summary} would be uploaded:")
        _listing(waiting)
        return 0
    if not has_login():
        print(f"{summary} waiting for upload:")
        _listing(waiting)
        raise UserError(f"{summary} wait for upload but no wandb login was found; {LOGIN_HINT}, then run: "
                        f"orchestra sync {target}")
    print(f"uploading {summary} with wandb sync", flush=True)
    command = [*_wandb_command(), "sync", "--no-include-synced", *(str(r.folder) for r in waiting)]
    code = subprocess.run(command).returncode
    uploaded = sum(r.synced for r in waiting)
    if code != 0 or uploaded < len(waiting):
        print(f"error: wandb sync exited with {code}; {uploaded} of {len(waiting)} run(s) uploaded (see its output "
              f"above); run orchestra sync {target} again to retry the rest", file=sys.stderr)
        return 1
    print(f"uploaded {uploaded} run(s)")
    return 0
