"""Submitting a sweep to SLURM as ONE job array through submitit."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from launch.launcher import SchedulerError
from launch.member import DEFAULT_ENTRY_MODULE, MemberJob
from launch.slurm.queue import run_query


def require_sbatch() -> None:
    if shutil.which("sbatch") is None:
        raise SchedulerError("launcher=slurm needs sbatch on PATH and none was found; run locally with launcher=local"
                             " (or start a development cluster: orchestra cluster up)")


def check_settings(settings: dict[str, Any]) -> None:
    """Catch what sbatch would refuse with several lines of its own: no sbatch, no controller, a wrong partition."""
    require_sbatch()
    out = run_query(["sinfo", "-h", "-o", "%P"])
    if out is None:
        raise SchedulerError("the SLURM controller does not answer (sinfo failed); check SLURM_CONF / slurmctld, "
                             "or run locally with launcher=local")
    partitions = [p.strip().rstrip("*") for p in out.split()]
    wanted = settings.get("partition")
    if wanted and wanted not in partitions:
        raise SchedulerError(f"unknown partition '{wanted}'; partitions on this cluster: {', '.join(partitions)} "
                             f"(set launcher.partition=...)")


def build_executor(sweep_dir: Path, settings: dict[str, Any]):
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
    from launch.submitit_compat import array_sbatch_script

    return array_sbatch_script(build_executor(sweep_dir, settings), members)


def submit(sweep_dir: Path, job_dirs: Sequence[str], settings: dict[str, Any],
           entry_module: str = DEFAULT_ENTRY_MODULE) -> list[str]:
    """Submit every job dir as one array task; returns the task ids (``<array>_<index>``)."""
    import submitit

    require_sbatch()
    executor = build_executor(sweep_dir, settings)
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


