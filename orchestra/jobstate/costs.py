"""What a member cost: device-hours and peak memory, accumulated over its attempts in results.json.

Device-hours are measured by the job itself, so they need neither ``sacct`` nor a server afterwards:
on SLURM, this attempt's wall time x the GPUs the job was allocated (the CPUs when it has none), read from the
job's SLURM environment; locally, wall time x the trainer's devices (``trainer.devices`` x ``trainer.num_nodes``).
Queue time and the interpreter start before the job body are not counted.
"""

from __future__ import annotations

import os
import re
import resource
import sys
from collections.abc import Mapping
from typing import Any


def _slurm_nodes(env: Mapping[str, str]) -> int:
    return int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 1)


def _count_list(text: str) -> int:
    """How many entries in a SLURM id list such as ``0,1`` or ``0-3,6``."""
    total = 0
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        total += int(high) - int(low) + 1 if high.isdigit() and low.isdigit() else 1
    return total


def _cpus_per_node_total(text: str) -> int:
    """SLURM_JOB_CPUS_PER_NODE reads like ``4(x2),2``: 4 CPUs on each of two nodes, then 2 on a third."""
    total = 0
    for count, repeat in re.findall(r"(\d+)(?:\(x(\d+)\))?", text):
        total += int(count) * int(repeat or 1)
    return total


def slurm_resources(env: Mapping[str, str]) -> dict[str, Any]:
    """The GPUs (or, without GPUs, CPUs) this SLURM job holds on all its nodes."""
    nodes = _slurm_nodes(env)
    gpus = 0
    if env.get("SLURM_GPUS_ON_NODE", "").isdigit():
        gpus = int(env["SLURM_GPUS_ON_NODE"]) * nodes
    elif env.get("SLURM_JOB_GPUS"):
        gpus = _count_list(env["SLURM_JOB_GPUS"]) * nodes
    if gpus:
        return {"kind": "gpu", "count": gpus, "nodes": nodes, "source": "slurm environment"}
    cpus = _cpus_per_node_total(env.get("SLURM_JOB_CPUS_PER_NODE", ""))
    if not cpus and env.get("SLURM_CPUS_ON_NODE", "").isdigit():
        cpus = int(env["SLURM_CPUS_ON_NODE"]) * nodes
    return {"kind": "cpu", "count": max(1, cpus), "nodes": nodes, "source": "slurm environment"}


def _device_count(devices: Any, accelerator: str) -> int:
    if isinstance(devices, list | tuple):
        return len(devices)
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    if devices in ("auto", -1, "-1", None):
        torch = sys.modules.get("torch")
        if accelerator in ("gpu", "cuda", "auto") and torch is not None and torch.cuda.is_available():
            return torch.cuda.device_count()
        return 1
    try:
        return int(devices)
    except (TypeError, ValueError):  # never let cost bookkeeping cost a member its results file
        return 1


def local_resources(trainer_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The devices Lightning was asked for: ``trainer.devices`` x ``trainer.num_nodes``."""
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    nodes = int(trainer_cfg.get("num_nodes") or 1)
    count = _device_count(trainer_cfg.get("devices", 1), accelerator) * nodes
    torch = sys.modules.get("torch")
    on_gpu = accelerator in ("gpu", "cuda") or (
        accelerator == "auto" and torch is not None and torch.cuda.is_available())
    return {"kind": "gpu" if on_gpu else "cpu", "count": max(1, count), "nodes": nodes,
            "source": "trainer.devices x trainer.num_nodes"}


def peak_memory() -> tuple[float, str]:
    """Peak memory of this process in MiB, and what was measured (GPU allocations when CUDA was used)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20, "torch.cuda.max_memory_allocated (GPU, rank 0)"
    # Linux reports ru_maxrss in KiB (macOS in bytes)
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, "ru_maxrss (CPU RAM, rank 0 process)"


def attempt_costs(trainer_cfg: Mapping[str, Any], wall_s: float, previous: Mapping[str, Any],
                  env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Fields to merge into results.json after an attempt: device-hours add up over attempts, peak memory is the
    maximum over them.
    """
    env = os.environ if env is None else env
    resources = slurm_resources(env) if "SLURM_JOB_ID" in env else local_resources(trainer_cfg)
    memory_mb, memory_source = peak_memory()
    hours = float(previous.get("device_hours", 0.0)) + wall_s / 3600 * resources["count"]
    return {
        "device_hours": round(hours, 6),
        "resources": resources,
        "peak_memory_mb": round(max(memory_mb, float(previous.get("peak_memory_mb", 0.0))), 1),
        "peak_memory_source": memory_source,
    }
