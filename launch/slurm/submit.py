"""Submitting a sweep to SLURM as ONE job array through submitit."""

from __future__ import annotations

import os
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


def check_settings(settings: dict[str, Any], dev_cluster_dirs: Sequence[str | Path] | None = None) -> None:
    """Catch what sbatch would refuse with several lines of its own: no sbatch, no controller, a wrong partition.

    ``dev_cluster_dirs``: where a development cluster may run (default: ``orchestra cluster up``'s state dir); when
    no controller answers but one of them runs, the error says which SLURM_CONF to export.
    """
    require_sbatch()
    out = run_query(["sinfo", "-h", "-o", "%P"])
    if out is None:
        from launch.cluster.discover import no_controller_hint
        from launch.cluster.layout import DEFAULT_STATE_DIR

        hint = no_controller_hint(dev_cluster_dirs or (DEFAULT_STATE_DIR,), os.environ.get("SLURM_CONF"))
        raise SchedulerError("the SLURM controller does not answer (sinfo failed); "
                             + (hint or "check SLURM_CONF / slurmctld, or run locally with launcher=local"))
    partitions = [p.strip().rstrip("*") for p in out.split()]
    wanted = settings.get("partition")
    if wanted and wanted not in partitions:
        raise SchedulerError(f"unknown partition '{wanted}'; partitions on this cluster: {', '.join(partitions)} "
                             f"(set launcher.partition=...)")


# launcher.cpus_per_task=auto on a real cluster, and the most `auto` gives a member on a development cluster.
DEFAULT_CPUS_PER_TASK = 2


def dev_cluster_cpus() -> int | None:
    """This machine's CPUs when SLURM_CONF is a development cluster's (its one node is this machine), else None.

    Not sinfo's count: a development cluster declares more CPUs than the machine has, so that jobs can share it.
    """
    from launch.cluster.discover import state_dir_of

    if state_dir_of(os.environ.get("SLURM_CONF")) is None:
        return None
    from launch.cluster.host import cpu_count

    return cpu_count()


def member_cpus(settings: dict[str, Any]) -> tuple[int, bool]:
    """(``--cpus-per-task``, whether members must be told to keep to it) for ``launcher.cpus_per_task``.

    An int is taken as given. ``auto`` is DEFAULT_CPUS_PER_TASK, except on a development cluster: there the members
    that run at once (``array_parallelism``) share this machine's CPUs, at least 1 each; and since that cluster
    binds no task to its CPUs (task/none), each member is also told to use that many threads (OMP_NUM_THREADS).
    """
    value = settings.get("cpus_per_task", "auto")
    if str(value).strip().lower() != "auto":
        return int(value), False
    cpus = dev_cluster_cpus()
    if cpus is None:
        return DEFAULT_CPUS_PER_TASK, False
    at_once = max(1, int(settings.get("array_parallelism", 16)))
    return max(1, min(DEFAULT_CPUS_PER_TASK, cpus // at_once)), True


def build_executor(sweep_dir: Path, settings: dict[str, Any]):
    import submitit

    cpus, pin_threads = member_cpus(settings)
    executor = submitit.SlurmExecutor(folder=str(sweep_dir / "slurm" / "%j"),
                                      max_num_timeout=int(settings.get("max_timeouts", 3)))
    params: dict[str, Any] = {
        "job_name": settings.get("job_name") or f"orchestra-{sweep_dir.name}",
        "time": int(settings.get("time_min", 60)),
        "nodes": int(settings.get("nodes", 1)),
        "ntasks_per_node": int(settings.get("tasks_per_node", 1)),
        "cpus_per_task": cpus,
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
    setup = list(settings.get("setup") or [])
    if pin_threads:  # the caller's own OMP_NUM_THREADS (sbatch passes the environment on) wins
        setup.insert(0, f"export OMP_NUM_THREADS=${{OMP_NUM_THREADS:-{cpus}}}")
    if setup:
        params["setup"] = setup
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


