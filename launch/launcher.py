"""What every launcher does for a sweep: submit members, say what became of their jobs, cancel them.

``orchestra`` reaches launchers only through ``launcher_for`` and this protocol, so adding one (say, Kubernetes)
is a module implementing it plus one line in ``LAUNCHERS``; no caller branches on a launcher's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from launch import manifest
from launch.job_id import JobId


class SchedulerError(RuntimeError):
    """A launcher cannot do what was asked (no scheduler, a refused submission); the message is one line and
    suggests a way out."""


@dataclass
class Submission:
    """What ``submit`` did: a blocking launcher has run the members (``exit_codes``); a queueing one has only
    queued them (``job_ids``)."""

    finished: bool
    exit_codes: dict[int, int]
    job_ids: list[JobId]
    interrupted: bool = False  # a blocking launcher stopped early (Ctrl+C): its members saved and can resume


class Launcher(Protocol):
    name: str
    # True when the launcher itself writes each member's end (COMPLETED / FAILED / PREEMPTED) into the manifest,
    # as the local runner does; a scheduler's members are judged from its accounting and their results files.
    records_member_end: bool

    def check(self, settings: dict[str, Any]) -> None:
        """Refuse, with SchedulerError, settings the launcher could not run (before any job directory exists)."""

    def script(self, sweep_dir: Path, settings: dict[str, Any], members: int) -> str | None:
        """What would be handed to the scheduler for ``members`` members (a dry run prints it), or None."""

    def submit(self, sweep_dir: Path, members: Sequence[manifest.Member], settings: dict[str, Any],
               entry: Sequence[str]) -> Submission:
        """Start the members; their job ids, states and attempts are recorded in the manifest."""

    def states(self, job_ids: Sequence[JobId]) -> dict[JobId, dict[str, str]]:
        """What the launcher knows of each job: ``{"state": ..., "elapsed": ..., "exit_code": ...}``; ids it does
        not know are absent. Never hangs."""

    def cancel(self, job_ids: Sequence[JobId]) -> None:
        """Stop these jobs, queued or running."""


def launcher_for(name: str) -> Launcher:
    """The launcher called ``name`` (``launcher.name`` in the config, or a JobId's launcher)."""
    if name == "slurm":
        from launch.slurm import SlurmLauncher

        return SlurmLauncher()
    if name == "local":
        from launch.local import LocalLauncher

        return LocalLauncher()
    raise SchedulerError(f"unknown launcher '{name}'; launchers: local, slurm")


def states_of(job_ids: Sequence[JobId]) -> dict[JobId, dict[str, str]]:
    """Ask each launcher about its own jobs (one query per launcher)."""
    states: dict[JobId, dict[str, str]] = {}
    for name in sorted({job_id.launcher for job_id in job_ids}):
        states.update(launcher_for(name).states([j for j in job_ids if j.launcher == name]))
    return states


def cancel_all(job_ids: Sequence[JobId]) -> None:
    for name in sorted({job_id.launcher for job_id in job_ids}):
        launcher_for(name).cancel([j for j in job_ids if j.launcher == name])
