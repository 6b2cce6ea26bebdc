"""What ``Module.configure_model`` does to the model before the strategy wraps it: synchronised BatchNorm,
channels_last, torch.compile and FSDP2 sharding, in that order.

Order matters: layers are converted before they are sharded (sharding fixes the parameter objects), and the
backbone is compiled after sharding, so FSDP's hooks run inside the compiled call. ``nn.Module.compile`` compiles
in place, so parameter names, state-dict keys and checkpoints are the same as without compile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from method_zoo import TeacherStudentWrapper
from orchestra.model.mixed_batchnorm import MixedDtypeBatchNorm, convert_batchnorm
from orchestra.model.sync_batchnorm import convert_to_global_batchnorm


@dataclass(frozen=True)
class ParallelPlan:
    """The parts of a strategy that change the model itself (built by ``orchestra.distributed.strategies``)."""

    sync_batchnorm: bool = False
    mixed_dtype_batchnorm: bool = False  # DeepSpeed: bf16 parameters may sit beside float32 statistics
    fsdp: bool = False
    reshard_after_forward: bool = True


def backbone_networks(module: nn.Module) -> list[nn.Module]:
    """The networks that run the images: the backbone, or a teacher/student pair's student and teacher."""
    backbone = getattr(module, "backbone", None)
    if isinstance(backbone, TeacherStudentWrapper):
        return [backbone.student, backbone.teacher]
    return [backbone] if isinstance(backbone, nn.Module) else []


def sharding_units(module: nn.Module) -> list[nn.Module]:
    """Modules to ``fully_shard``: each must own parameters and be *called* (FSDP2 gathers in forward hooks).

    A teacher is sharded exactly like its student (same shapes, same mesh), so the EMA update pairs local shards.
    Evaluator heads are called through methods, not ``forward``, so their parameter-owning layers are the units.
    """
    units: list[nn.Module] = []
    for name, child in module.named_children():
        if not any(True for _ in child.parameters()):
            continue
        if name == "evaluators":
            units += [m for m in child.modules() if any(True for _ in m.parameters(recurse=False))]
        elif isinstance(child, TeacherStudentWrapper):
            units += [child.student, child.teacher]
        else:
            units.append(child)
    return units


def transformer_blocks(unit: nn.Module) -> list[nn.Module]:
    """The blocks of a ViT-like network (a ``blocks`` ModuleList), each its own FSDP unit; none for other nets."""
    blocks = getattr(unit, "blocks", None)
    return list(blocks) if isinstance(blocks, nn.ModuleList) else []


def shard(module: nn.Module, mesh: Any, reshard_after_forward: bool) -> None:
    """FSDP2 ``fully_shard`` on every sharding unit; a transformer's blocks first, one by one, so each is gathered
    only while it runs and peak memory holds one block's full parameters, not the whole encoder's."""
    from torch.distributed.fsdp import fully_shard

    for unit in sharding_units(module):
        for block in transformer_blocks(unit):
            fully_shard(block, mesh=mesh, reshard_after_forward=reshard_after_forward)
        fully_shard(unit, mesh=mesh, reshard_after_forward=reshard_after_forward)


def configure(module, plan: ParallelPlan | None, channels_last: bool, compile_backbone: bool) -> None:
    """Apply the plan and the switches to a Lightning module whose trainer (and device mesh) already exist."""
    plan = plan or ParallelPlan()
    trainer = module.trainer
    if plan.sync_batchnorm and trainer.world_size > 1:
        if trainer.strategy.root_device.type == "cpu" or plan.mixed_dtype_batchnorm:
            # torch's SyncBatchNorm refuses CPU tensors, and DeepSpeed's bf16 parameters beside float32 statistics
            convert_to_global_batchnorm(module)
        else:
            nn.SyncBatchNorm.convert_sync_batchnorm(module)
    elif plan.mixed_dtype_batchnorm:
        convert_batchnorm(module, MixedDtypeBatchNorm)
    if channels_last:
        for network in backbone_networks(module):
            network.to(memory_format=torch.channels_last)
    if plan.fsdp:
        shard(module, module.device_mesh["data_parallel"], plan.reshard_after_forward)
    if compile_backbone:
        for network in backbone_networks(module):
            network.compile()
