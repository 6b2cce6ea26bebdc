"""SLURM: a sweep is ONE submitit job array (``submit``); sacct and squeue say what became of it (``queue``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from launch import manifest
from launch.job_id import JobId
from launch.launcher import SchedulerError, Submission
from launch.slurm.queue import QUEUED_STARTED, QUEUED_WAITING, STILL_QUEUED, scheduler_states
from launch.slurm.submit import check_settings, sbatch_script, submit

__all__ = ["QUEUED_STARTED", "QUEUED_WAITING", "STILL_QUEUED", "SchedulerError", "SlurmLauncher", "check_settings",
           "sbatch_script", "scheduler_states", "submit"]


class SlurmLauncher:
    """Queues the members and returns; SLURM (through submitit) starts, signals and requeues them."""

    name = "slurm"
    records_member_end = False

    def check(self, settings: dict[str, Any]) -> None:
        check_settings(settings)

    def script(self, sweep_dir: Path, settings: dict[str, Any], members: int) -> str | None:
        return sbatch_script(sweep_dir, settings, members)

    def submit(self, sweep_dir: Path, members: Sequence[manifest.Member], settings: dict[str, Any],
               entry: Sequence[str]) -> Submission:
        module = entry[-1]  # [python, -m, module]: submitit runs the module in the allocation's Python
        job_ids = [JobId("slurm", j) for j in submit(sweep_dir, [m.job_dir for m in members], settings, module)]
        with manifest.updating(sweep_dir) as sweep:
            for member, job_id in zip(members, job_ids, strict=True):
                entry_ = sweep.members[member.index]
                entry_.job_ids.append(str(job_id))
                entry_.state, entry_.attempts, entry_.submitted_at = "PENDING", entry_.attempts + 1, manifest.now()
        return Submission(finished=False, exit_codes={}, job_ids=job_ids)

    def states(self, job_ids: Sequence[JobId]) -> dict[JobId, dict[str, str]]:
        answer = scheduler_states([j.value for j in job_ids])
        return {j: answer[j.value] for j in job_ids if j.value in answer}

    def cancel(self, job_ids: Sequence[JobId]) -> None:
        from launch.slurm.queue import cancel

        cancel([j.value for j in job_ids])
