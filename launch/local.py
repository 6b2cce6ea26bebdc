"""Runs sweep members as local processes, at most ``parallelism`` at a time; no scheduler needed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from launch import manifest, retry
from launch.interrupt import PARENT_ENV, SweepStop, stop_on_signals
from launch.job_id import JobId
from launch.launcher import Submission
from launch.member import DIVERGED_EXIT_CODE, ENTRY_MODULES, PREEMPTED_EXIT_CODE

CANCELLED_EXIT_CODE = 130


def _member_env(parallelism: int) -> dict[str, str]:
    """Share the cores between concurrent members; oversubscribed math libraries slow everyone down."""
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, parallelism)))
    return env


def _end_state(code: int, interrupted: bool) -> str:
    if code == 0:
        return "COMPLETED"
    if code == DIVERGED_EXIT_CODE:
        return "DIVERGED"
    if interrupted and (code == PREEMPTED_EXIT_CODE or code < 0):
        return "INTERRUPTED"  # saved (or killed on a third signal): resumable at once
    return "PREEMPTED" if code == PREEMPTED_EXIT_CODE else "FAILED"


def _run_member(sweep_dir: Path, member: manifest.Member, command: Sequence[str], echo: bool,
                parallelism: int = 1, max_failures: int = 0, stop: SweepStop | None = None) -> int:
    """Run the member until it ends; a run killed by a signal is started again (same job dir, so it resumes from
    last.ckpt) while ``max_failures`` allows. Every start counts one attempt in the manifest.
    """
    stop = stop or SweepStop()
    while True:
        code = _run_once(sweep_dir, member, command, echo, parallelism, stop)
        if code is None:
            return CANCELLED_EXIT_CODE
        if stop.requested.is_set() or not (
                retry.killed_by_signal(code) and retry.take_retry(sweep_dir, member.job_dir, max_failures, False)):
            break
        with open(Path(member.job_dir) / "log.txt", "a") as log:
            log.write(f"orchestra: member {retry.describe(code)}; running it again (launcher.max_failures)\n")
    with manifest.updating(sweep_dir) as sweep:
        entry = sweep.members[member.index]
        if entry.state != "CANCELLED":  # a cancel's SIGTERM ends the process too; it stays cancelled
            entry.state = _end_state(code, stop.requested.is_set())
        entry.finished_at = manifest.now()
    return code


def _run_once(sweep_dir: Path, member: manifest.Member, command: Sequence[str], echo: bool,
              parallelism: int, stop: SweepStop) -> int | None:
    """One start of the member's process; its return code, or None when it was cancelled (or the sweep stopped)
    before it started."""
    job_dir = Path(member.job_dir)
    with manifest.updating(sweep_dir) as sweep:
        entry = sweep.members[member.index]
        if entry.state == "CANCELLED":  # cancelled while it waited for a free slot (or between retries)
            return None
        entry.state, entry.attempts, entry.submitted_at = "RUNNING", entry.attempts + 1, manifest.now()
    env = {**_member_env(parallelism), PARENT_ENV: str(os.getpid())}
    # The body writes its log itself: a pipe through this process broke when it died, and the member with it.
    with open(job_dir / "log.txt", "ab") as log:
        offset = log.tell()
        # Blocked in the child (the mask outlives exec) until its body can record an interruption properly.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            process = subprocess.Popen([*command, str(job_dir)], stdout=log, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    stop.started(process.pid)
    try:
        with manifest.updating(sweep_dir) as sweep:
            sweep.members[member.index].job_ids.append(str(JobId.local(process.pid)))
        return _follow(process, job_dir / "log.txt", offset, f"  [{member.index}] " if echo else None)
    finally:
        stop.ended(process.pid)


def _follow(process: subprocess.Popen, log: Path, offset: int, prefix: str | None) -> int:
    """Wait for ``process``, echoing the lines it appends to ``log`` (from ``offset``) when ``prefix`` is set."""
    partial = b""
    with open(log, "rb") as handle:
        handle.seek(offset)
        while True:
            code = process.poll()
            chunk = handle.read()
            if prefix is not None and chunk:
                lines = (partial + chunk).split(b"\n")
                partial = lines.pop()
                sys.stdout.write("".join(f"{prefix}{line.decode(errors='replace')}\n" for line in lines))
                sys.stdout.flush()
            if code is not None and not chunk:
                if prefix is not None and partial:
                    sys.stdout.write(f"{prefix}{partial.decode(errors='replace')}\n")
                return code
            if not chunk:
                time.sleep(0.1)


def run_members(sweep_dir: Path, members: Sequence[manifest.Member], command: Sequence[str], parallelism: int = 1,
                on_finish: Callable[[manifest.Member, int], None] | None = None, echo: bool = True,
                max_failures: int = 0, stop: SweepStop | None = None) -> dict[int, int]:
    """Run ``command + [job_dir]`` for each member; returns exit codes by member index. Once ``stop`` is requested
    no member starts; those that never did are recorded INTERRUPTED (``orchestra resume`` runs them)."""
    stop = stop or SweepStop()
    codes: dict[int, int] = {}
    pending = list(members)
    running: list[threading.Thread] = []

    def work(member: manifest.Member) -> None:
        codes[member.index] = _run_member(sweep_dir, member, command, echo, parallelism, max_failures, stop)
        if on_finish is not None:
            on_finish(member, codes[member.index])

    while pending or running:
        running = [t for t in running if t.is_alive()]
        if stop.requested.is_set() and pending:
            _never_started(sweep_dir, pending)
            pending = []
        while pending and len(running) < max(1, parallelism):
            thread = threading.Thread(target=work, args=(pending.pop(0),), daemon=True)
            thread.start()
            running.append(thread)
        time.sleep(0.2)
    return codes


def _never_started(sweep_dir: Path, members: Sequence[manifest.Member]) -> None:
    with manifest.updating(sweep_dir) as sweep:
        for member in members:
            if sweep.members[member.index].state not in ("CANCELLED",):
                sweep.members[member.index].state = "INTERRUPTED"


def process_alive(job_id: JobId) -> bool:
    """Whether the member's local process still runs. Its pid may since belong to another program (pids are
    reused), and cancel must never signal that one: where /proc exists, the command line must be a job body's."""
    pid = job_id.pid
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        return any(module.encode() in cmdline for module in ENTRY_MODULES)
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # gone in between, or a system without /proc
    except OSError:
        return True


class LocalLauncher:
    """Members as child processes of the ``orchestra sweep`` process, ``launcher.parallelism`` at a time."""

    name = "local"
    records_member_end = True

    def check(self, settings: dict[str, Any]) -> None:
        return None

    def script(self, sweep_dir: Path, settings: dict[str, Any], members: int) -> str | None:
        return None

    def submit(self, sweep_dir: Path, members: Sequence[manifest.Member], settings: dict[str, Any],
               entry: Sequence[str]) -> Submission:
        with stop_on_signals(SweepStop()) as stop:
            codes = run_members(sweep_dir, members, entry, parallelism=int(settings.get("parallelism", 1)),
                                max_failures=int(settings.get("max_failures", 1)), stop=stop)
        return Submission(finished=True, exit_codes=codes, job_ids=[], interrupted=stop.requested.is_set())

    def states(self, job_ids: Sequence[JobId]) -> dict[JobId, dict[str, str]]:
        return {job_id: {"state": "RUNNING", "exit_code": "", "elapsed": ""} for job_id in job_ids
                if process_alive(job_id)}

    def cancel(self, job_ids: Sequence[JobId]) -> None:
        for job_id in job_ids:
            if process_alive(job_id) and job_id.pid is not None:
                os.kill(job_id.pid, signal.SIGTERM)
