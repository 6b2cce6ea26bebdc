"""Automatic re-runs of a member whose process was killed from outside (``launcher.max_failures``).

A member that died of a signal (SIGKILL from the OOM killer or an admin, SIGSEGV, SIGBUS, ...) failed through no
fault of its code: running it again in the same job dir resumes from ``last.ckpt``. A member whose Python code
raised exits with a plain non-zero code and a FAILED results file; running it again would fail the same way, so it
is never retried. Ctrl+C (SIGINT) is a person stopping it, not a failure to undo.
"""

from __future__ import annotations

import signal
from pathlib import Path

from launch import manifest


def killed_by_signal(returncode: int) -> bool:
    """True for a process that a signal ended (not a code error, not a Ctrl+C)."""
    return returncode < 0 and -returncode != signal.SIGINT


def describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def take_retry(sweep_dir: Path | str, job_dir: str, max_failures: int, count_attempt: bool) -> bool:
    """Claim one of the member's ``max_failures`` retries in the manifest; False when none is left (or the member
    was cancelled meanwhile). ``count_attempt``: the caller does not count attempts itself when it re-runs.
    """
    if not manifest.is_sweep(sweep_dir):
        return False
    with manifest.updating(sweep_dir) as sweep:
        member = next((m for m in sweep.members if Path(m.job_dir) == Path(job_dir)), None)
        if member is None or member.state == "CANCELLED" or member.retries >= max_failures:
            return False
        member.retries += 1
        if count_attempt:
            member.attempts += 1
    return True
