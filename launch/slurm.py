"""Submitting a sweep to SLURM as ONE job array through submitit, and asking SLURM what became of it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from launch.member import MemberJob

SACCT_TIMEOUT_S = 10
STOPPED_MAYBE_REQUEUED = {"TIMEOUT", "PREEMPTED"}
# Job states in which SLURM still holds the job: waiting to (re)start, or started and not yet gone.
QUEUED_WAITING = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "SPECIAL_EXIT", "RESIZING"}
QUEUED_STARTED = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "STOPPED", "SUSPENDED"}
STILL_QUEUED = QUEUED_WAITING | QUEUED_STARTED


class SchedulerError(RuntimeError):
    """SLURM is missing or not answering; the message is one line and suggests a way out."""


def require_sbatch() -> None:
    if shutil.which("sbatch") is None:
        raise SchedulerError("launcher=slurm needs sbatch on PATH and none was found; run locally with launcher=local"
                             " (or start a development cluster: orchestra cluster up)")


def check_settings(settings: dict[str, Any]) -> None:
    """Catch what sbatch would refuse with several lines of its own: no sbatch, no controller, a wrong partition."""
    require_sbatch()
    out = _run(["sinfo", "-h", "-o", "%P"])
    if out is None:
        raise SchedulerError("the SLURM controller does not answer (sinfo failed); check SLURM_CONF / slurmctld, "
                             "or run locally with launcher=local")
    partitions = [p.strip().rstrip("*") for p in out.split()]
    wanted = settings.get("partition")
    if wanted and wanted not in partitions:
        raise SchedulerError(f"unknown partition '{wanted}'; partitions on this cluster: {', '.join(partitions)} "
                             f"(set launcher.partition=...)")


def _executor(sweep_dir: Path, settings: dict[str, Any]):
    import submitit

    executor = submitit.SlurmExecutor(folder=str(sweep_dir / "slurm" / "%j"),
                                      max_num_timeout=int(settings.get("max_timeouts", 3)))
    params: dict[str, Any] = {
        "job_name": settings.get("job_name") or f"orchestra-{sweep_dir.name}",
        "time": int(settings.get("time_min", 60)),
        "nodes": int(settings.get("nodes", 1)),
        "ntasks_per_node": int(settings.get("tasks_per_node", 1)),
        "cpus_per_task": int(settings.get("cpus_per_task", 2)),
        "signal_delay_s": int(settings.get("signal_delay_s", 60)),
        "array_parallelism": int(settings.get("array_parallelism", 16)),
        "stderr_to_stdout": True,
    }
    for key in ("partition", "account", "qos"):
        if settings.get(key):
            params[key] = settings[key]
    if settings.get("mem_gb"):
        params["mem"] = f"{settings['mem_gb']}G"
    gpus = settings.get("gpus_per_node")
    if gpus is None and str(settings.get("accelerator")) in ("gpu", "cuda"):
        gpus = settings.get("tasks_per_node", 1)  # one GPU per rank
    if int(gpus or 0):
        params["gpus_per_node"] = int(gpus)
    if settings.get("setup"):
        params["setup"] = list(settings["setup"])
    extra = {}
    for line in settings.get("extra_sbatch") or []:  # "--constraint=a100" or "constraint=a100"
        key, _, value = str(line).lstrip("-").partition("=")
        extra[key.replace("-", "_")] = value or True
    if extra:
        params["additional_parameters"] = extra
    executor.update_parameters(**params)
    return executor


def sbatch_script(sweep_dir: Path, settings: dict[str, Any], members: int) -> str:
    """The exact script ``submit`` would hand to sbatch for a ``members``-task array."""
    from submitit.slurm.slurm import _make_sbatch_string

    executor = _executor(sweep_dir, settings)
    return _make_sbatch_string(command=executor._submitit_command_str, folder=executor.folder,
                               **{**executor.parameters, "map_count": members})


def submit(sweep_dir: Path, job_dirs: Sequence[str], settings: dict[str, Any],
           entry_module: str = "orchestra.job") -> list[str]:
    """Submit every job dir as one array task; returns the task ids (``<array>_<index>``)."""
    import submitit

    require_sbatch()
    executor = _executor(sweep_dir, settings)
    try:
        with executor.batch():
            max_failures = int(settings.get("max_failures", 1))
            jobs = [executor.submit(MemberJob(job_dir, entry_module, max_failures)) for job_dir in job_dirs]
    except (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError) as err:
        first = str(err).strip().splitlines()
        detail = next((line for line in first if "error" in line.lower()), first[-1] if first else "")
        raise SchedulerError(f"sbatch refused the sweep: {detail.strip()} (check launcher.partition/account/qos, "
                             f"or run locally with launcher=local)") from None
    return [job.job_id for job in jobs]


def _ask(command: list[str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=SACCT_TIMEOUT_S, check=False)
    except (subprocess.TimeoutExpired, FileNotFoundError):
        return None


def _run(command: list[str]) -> str | None:
    done = _ask(command)
    return done.stdout if done is not None and done.returncode == 0 else None


def scheduler_states(job_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """State, exit code and elapsed time per job id from ONE sacct call; squeue fills in when sacct cannot answer.

    Never hangs: each query has a timeout, and ids neither knows are simply absent from the answer.
    """
    if not job_ids:
        return {}
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    out = _run(["sacct", "-n", "-P", "-X", "--format=JobID,State,ExitCode,Elapsed", "-j", ",".join(arrays)])
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
        _run(["scancel", *sorted({job_id.split("_")[0] if "_" not in job_id else job_id for job_id in job_ids})])
