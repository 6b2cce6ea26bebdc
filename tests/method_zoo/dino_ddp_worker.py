"""DINO inside spawned gloo ranks for test_dino.py: a real DDP (find_unused_parameters, as DINO's frozen prototypes
need) on each rank's slice of every global batch, against one process on the whole batch."""

from __future__ import annotations

import os
from types import SimpleNamespace

import torch
from method_zoo_ddp_worker import save_rank_results
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from method_zoo import TeacherStudentWrapper
from method_zoo.forwards.dino import dino_forward
from method_zoo.losses.dino import DINOLoss
from method_zoo.parts.dino import DINOHead

IMAGES_PER_STEP, GLOBAL, LOCAL, STEPS_PER_EPOCH, EPOCHS = 8, 2, 3, 3, 2
PROTOTYPES = 10


class TinyDino(nn.Module):
    """No BatchNorm (per-rank statistics would legitimately differ from one process's), float64 throughout."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        conv = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.backbone = TeacherStudentWrapper(conv.double(), base_ema=0.9)
        head = DINOHead(12, PROTOTYPES, hidden_dim=16, bottleneck_dim=6, freeze_last_layer_epochs=1)
        self.projector = TeacherStudentWrapper(head.double(), base_ema=0.9)
        self.dino_loss = DINOLoss(PROTOTYPES, warmup_teacher_temp_epochs=EPOCHS)
        self.trainer: SimpleNamespace | None = None  # what dino_forward reads the step and epoch from

    def forward(self, batch: dict, stage: str) -> dict:
        return dino_forward(self, batch, stage)


def make_batch(step: int, rank: int, world: int) -> dict:
    """Rank ``rank``'s contiguous slice of the step's images, per view, as the loaders shard (views view-major)."""
    g = torch.Generator().manual_seed(2000 + step)
    globals_ = torch.randn(GLOBAL, IMAGES_PER_STEP, 1, 8, 8, generator=g, dtype=torch.float64)
    locals_ = torch.randn(LOCAL, IMAGES_PER_STEP, 1, 5, 5, generator=g, dtype=torch.float64)
    per_rank = IMAGES_PER_STEP // world
    mine = slice(rank * per_rank, (rank + 1) * per_rank)
    idx = torch.arange(IMAGES_PER_STEP)[mine]
    return {"image": globals_[:, mine].flatten(0, 1), "sample_idx": idx.repeat(GLOBAL),
            "local_image": locals_[:, mine].flatten(0, 1), "local_sample_idx": idx.repeat(LOCAL)}


def train(rank: int, world: int) -> dict[str, torch.Tensor]:
    """Two epochs of AdamW (weight decay on) with the teacher updated after every step, as orchestra.Module does."""
    module = TinyDino()
    model = DistributedDataParallel(module, find_unused_parameters=True) if world > 1 else module
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=0.05, weight_decay=0.1)
    total = STEPS_PER_EPOCH * EPOCHS
    result: dict[str, torch.Tensor] = {}
    for step in range(total):
        module.trainer = SimpleNamespace(global_step=step, current_epoch=step // STEPS_PER_EPOCH,
                                         num_training_batches=STEPS_PER_EPOCH, accumulate_grad_batches=1,
                                         log_every_n_steps=1)
        loss = model(make_batch(step, rank, world), "train")["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        module.backbone.update_teacher(step + 1, total)
        module.projector.update_teacher(step + 1, total)
        if step == STEPS_PER_EPOCH - 1:
            result["after_epoch_0.last_layer"] = module.projector.student.last_layer.weight.detach().clone()
    return {**result, **{k: v.detach().clone() for k, v in module.state_dict().items()}}


def worker(rank: int, world: int, out_dir: str) -> None:
    """Joins the store the test hosts (MASTER_ADDR/PORT inherited from its environment) and saves its state."""
    os.environ["RANK"], os.environ["WORLD_SIZE"] = str(rank), str(world)
    save_rank_results(rank, world, None, out_dir, lambda: train(rank, world))
