"""The ``strategy`` config group -> a Lightning strategy object, plus what the strategy changes in the model.

``check_strategy`` imports neither torch nor Lightning, so the CLI refuses an impossible request (DeepSpeed on
CPU, an unknown stage) with one line before any process starts. ``build_strategy`` runs in the job.

Global batch: ``data.batch_size`` is the batch summed over every device and node (each rank trains on its
``1/world_size`` slice of the same batch, see ``orchestra.data.batches``). So the usual rule
"global = per-device batch x devices x nodes x accumulation" holds with per-device batch =
``data.batch_size / (devices x num_nodes)``; ``orchestra.model.lr_scaling`` uses ``data.batch_size x accumulation``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from orchestra.errors import UserError

KNOWN_STRATEGIES = ("auto", "ddp", "fsdp", "deepspeed")


def _name(strategy: dict | None) -> str:
    return str((strategy or {}).get("name", "auto"))


def check_strategy(strategy: dict | None, trainer: dict) -> None:
    """One-line refusals for requests that cannot run; cheap (no torch import)."""
    name = _name(strategy)
    legacy = trainer.get("strategy")
    if legacy not in (None, "auto") and strategy is not None:
        raise UserError(f"trainer.strategy={legacy} is not read; the strategy has its own group: strategy={legacy}")
    if name not in KNOWN_STRATEGIES:
        raise UserError(f"unknown strategy '{name}'; known: {', '.join(KNOWN_STRATEGIES)}")
    if name == "deepspeed":
        if str(trainer.get("accelerator", "cpu")) == "cpu" and not _rehearsal(strategy):
            raise UserError("strategy=deepspeed runs on CUDA GPUs only and trainer.accelerator is cpu; "
                            "use trainer=gpu on a GPU machine, or strategy=fsdp (sharded, runs on CPU) or strategy=ddp "
                            "(strategy.cpu_rehearsal=true runs DeepSpeed on CPU to check a config, slowly)")
        if str((strategy or {}).get("stage", 2)) not in ("1", "2", "3"):
            raise UserError(f"strategy.stage={strategy.get('stage')} is not a ZeRO stage; use 1, 2 or 3")


def _rehearsal(strategy: dict | None) -> bool:
    return bool((strategy or {}).get("cpu_rehearsal", False))


def _backend(strategy: dict, trainer: dict) -> str | None:
    if strategy.get("backend"):
        return str(strategy["backend"])
    return "gloo" if str(trainer.get("accelerator")) == "cpu" else None  # None: Lightning picks nccl on GPU


def build_strategy(strategy: dict | None, trainer: dict, module: Any = None, global_batch: int | None = None):
    """Returns (the ``strategy`` argument for ``pl.Trainer``, the model plan for ``Module.configure_model``)."""
    from orchestra.model.setup import ParallelPlan

    strategy = dict(strategy or {})
    check_strategy(strategy, trainer)
    name = _name(strategy)
    if name == "auto":
        return "auto", ParallelPlan()
    if name == "ddp":
        from lightning.pytorch.strategies import DDPStrategy

        built = DDPStrategy(process_group_backend=_backend(strategy, trainer),
                            find_unused_parameters=bool(strategy.get("find_unused_parameters", False)),
                            gradient_as_bucket_view=bool(strategy.get("gradient_as_bucket_view", True)))
        return built, ParallelPlan(sync_batchnorm=bool(strategy.get("sync_batchnorm", False)))
    if name == "fsdp":
        ranks = _int(trainer.get("devices"), "trainer.devices") * _int(trainer.get("num_nodes", 1), "trainer.num_nodes")
        built = _atomic_model_parallel_class()(data_parallel_size=ranks, tensor_parallel_size=1,
                                               process_group_backend=_backend(strategy, trainer))
        return built, ParallelPlan(sync_batchnorm=bool(strategy.get("sync_batchnorm", False)), fsdp=True,
                                   reshard_after_forward=bool(strategy.get("reshard_after_forward", True)))
    return (_deepspeed(strategy, module, trainer, global_batch),
            ParallelPlan(sync_batchnorm=bool(strategy.get("sync_batchnorm", False)), mixed_dtype_batchnorm=True))


def _int(value: Any, key: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UserError(f"{key}={value} must be a whole number of devices (e.g. {key}=8)") from None


def _deepspeed(strategy: dict, module: Any, trainer: dict, global_batch: int | None):
    import torch

    on_cpu = str(trainer.get("accelerator", "cpu")) == "cpu"
    if not on_cpu and not torch.cuda.is_available():
        raise UserError("strategy=deepspeed runs on CUDA GPUs only and this machine has none; "
                        "use strategy=fsdp or strategy=ddp here")
    if on_cpu:  # a rehearsal (check_strategy refused the rest): DeepSpeed's own CPU accelerator, gloo between ranks
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        raise UserError("strategy=deepspeed needs the deepspeed package; run: pip install deepspeed") from None
    stage = int(strategy.get("stage", 2))
    if stage == 3 and module is not None and _has_teacher(module):
        raise UserError("ZeRO stage 3 partitions parameters, which BYOL's EMA teacher update needs whole; "
                        "use strategy.stage=2 or strategy=fsdp")
    # Lightning reads the micro-batch from loader.batch_sampler, which our sampler-built loaders do not have.
    ranks = _int(trainer.get("devices", 1), "trainer.devices") * _int(trainer.get("num_nodes", 1), "trainer.num_nodes")
    micro_batch = max(1, (global_batch or ranks) // ranks)
    return _atomic_deepspeed_class(on_cpu)(
        stage=stage, offload_optimizer=bool(strategy.get("offload_optimizer", False)),
        offload_parameters=bool(strategy.get("offload_parameters", False)), logging_batch_size_per_gpu=micro_batch,
        process_group_backend="gloo" if on_cpu else None)


def _has_teacher(module: Any) -> bool:
    from method_zoo import TeacherStudentWrapper

    return any(isinstance(part, TeacherStudentWrapper) for part in module.modules())


class DirectoryCheckpointSwap:
    """Mixin for strategies whose checkpoint is a directory written by every rank (FSDP2 DCP, DeepSpeed).

    Atomic means a reader sees the old checkpoint or the new one: all ranks write into a staging directory, then
    rank 0 publishes it (``orchestra.distributed.checkpoint_dirs.publish_directory``) while the others wait.
    """

    def save_checkpoint(self, checkpoint: dict, filepath, storage_options: Any = None) -> None:
        from orchestra.distributed.checkpoint_dirs import publish_directory, staging_path

        final = Path(self.broadcast(str(filepath)))
        staging = staging_path(final)
        if self.global_rank == 0:
            _remove(staging)
        self.barrier("checkpoint-staging")
        super().save_checkpoint(checkpoint, staging, storage_options)
        self.barrier("checkpoint-written")
        if self.global_rank == 0:
            publish_directory(staging, final)
        self.barrier("checkpoint-published")


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


# The strategy classes are defined on first use: importing this module must stay free of torch and Lightning.
def _atomic_model_parallel_class():
    from lightning.pytorch.strategies import ModelParallelStrategy

    class AtomicModelParallelStrategy(DirectoryCheckpointSwap, ModelParallelStrategy):
        pass

    return AtomicModelParallelStrategy


def _atomic_deepspeed_class(on_cpu: bool = False):
    from lightning.pytorch.strategies import DeepSpeedStrategy

    from orchestra.compat.lightning_compat import (
        deepspeed_setup_distributed_on_cpu,
        deepspeed_setup_environment_on_cpu,
    )

    class AtomicDeepSpeedStrategy(DirectoryCheckpointSwap, DeepSpeedStrategy):
        def setup_environment(self) -> None:
            if on_cpu:  # Lightning refuses any accelerator but CUDA here; the engine itself runs on CPU
                deepspeed_setup_environment_on_cpu(self)
            else:
                super().setup_environment()

        @property
        def root_device(self):
            import torch

            # DeepSpeed reads the process's device rank from the device index, which a plain CPU device lacks.
            return torch.device("cpu", self.local_rank) if on_cpu else super().root_device

        def setup_distributed(self) -> None:
            if not on_cpu:
                return super().setup_distributed()
            # Lightning's version also checks CUDA device indices, which CPU devices (index None) cannot pass.
            deepspeed_setup_distributed_on_cpu(self)

    return AtomicDeepSpeedStrategy
