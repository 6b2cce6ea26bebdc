"""The callable submitit runs for one sweep member: import the job entry point by name and run it on the job dir.

The entry point is data (a module name), so ``launch`` never imports training code itself. The callable is
checkpointable: when submitit's preemption/timeout handler asks, it resubmits itself unchanged; the job body has
already written ``last.ckpt`` by then and resumes from it.
"""

from __future__ import annotations

import importlib
from typing import Any

PREEMPTED_EXIT_CODE = 75  # shared with the job body: "stopped for a requeue, not failed"


class MemberFailed(RuntimeError):
    """The member's own code failed; raising makes SLURM and submitit record FAILED, never COMPLETED."""


class MemberJob:
    def __init__(self, job_dir: str, entry_module: str = "orchestra.job") -> None:
        self.job_dir, self.entry_module = job_dir, entry_module

    def __call__(self) -> str:
        entry: Any = importlib.import_module(self.entry_module)
        code = entry.main([self.job_dir])
        if code == PREEMPTED_EXIT_CODE:
            return "preempted"  # SLURM requeues this job itself (scontrol requeue); the next start resumes
        if code != 0:
            raise MemberFailed(f"member {self.job_dir} exited with code {code}; see its log.txt")
        return "completed"

    def checkpoint(self) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(MemberJob(self.job_dir, self.entry_module))
