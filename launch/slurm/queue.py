"""Asking SLURM what became of a sweep's jobs (sacct, then squeue), and cancelling them. Every query has a
timeout: a status never hangs on a controller that does not answer."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

SACCT_TIMEOUT_S = 10
STOPPED_MAYBE_REQUEUED = {"TIMEOUT", "PREEMPTED"}
# Job states in which SLURM still holds the job: waiting to (re)start, or started and not yet gone.
QUEUED_WAITING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SPECIAL_EXIT", "RESIZING"}
QUEUED_STARTED = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "STOPPED", "SUSPENDED"}
STILL_QUEUED = QUEUED_WAITING | QUEUED_STARTED


def _ask(command: list[str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=SACCT_TIMEOUT_S, check=False)
    except (subprocess.TimeoutExpired, FileNotFoundError):
        return None


def run_query(command: list[str]) -> str | None:
    done = _ask(command)
    return done.stdout if done is not None and done.returncode == 0 else None


def scheduler_states(job_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """State, exit code and elapsed time per job id from ONE sacct call; squeue fills in when sacct cannot answer.

    Never hangs: each query has a timeout, and ids neither knows are simply absent from the answer.
    """
    if not job_ids:
        return {}
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    out = run_query(["sacct", "-n", "-P", "-X", "--format=JobID,State,ExitCode,Elapsed", "-j", ",".join(arrays)])
    states: dict[str, dict[str, str]] = {}
    for line in (out or "").splitlines():
        parts = line.split("|")
        if len(parts) >= 4:
            states[parts[0]] = {"state": parts[1].split()[0], "exit_code": parts[2], "elapsed": parts[3]}
    # sacct records TIMEOUT or PREEMPTED the moment the scheduler stops the job, while the job still sits in the
    # queue (COMPLETING) and submitit may yet requeue it: only once it has left the queue is that its end.
    unsettled = [j for j in job_ids if states.get(j, {}).get("state") in STOPPED_MAYBE_REQUEUED]
    missing = [j for j in job_ids if j not in states]
    if missing or unsettled:
        queue, answered = _queue(arrays)
        for job_id in unsettled:
            if queue.get(job_id, {}).get("state") in STILL_QUEUED:
                states[job_id] = {**states[job_id], "state": queue[job_id]["state"]}
            elif not answered:
                del states[job_id]  # unknown for now: whoever asks keeps what it knew, and asks again later
        for job_id, row in queue.items():
            states.setdefault(job_id, row)
    return states


def _queue(arrays: Sequence[str]) -> tuple[dict[str, dict[str, str]], bool]:
    """squeue's row per job (one per array task), and whether squeue answered at all. "Invalid job id" is an
    answer: the jobs have left the queue."""
    # -r: one row per array task; sacct (22.05) folds pending tasks into one "123_[4-99]" row instead
    done = _ask(["squeue", "-h", "-r", "-o", "%i|%T|%M", "-j", ",".join(arrays)])
    if done is None:
        return {}, False
    if done.returncode != 0:
        return {}, "invalid job id" in done.stderr.lower()
    rows = {}
    for line in done.stdout.splitlines():
        job_id, state, elapsed = (line.split("|") + ["", "", ""])[:3]
        rows[job_id] = {"state": state, "exit_code": "", "elapsed": elapsed}
    return rows, True


def cancel(job_ids: Sequence[str]) -> None:
    if job_ids:
        run_query(["scancel", *sorted(set(job_ids))])
