"""SwAV pieces shared by test_swav.py and the gloo ranks it spawns (a plain module, so spawned children import it).

``SwAVModule`` stands in for orchestra.Module: the parts as attributes, a ``current_epoch`` the test sets, and
``queues`` as orchestra's OnlineQueue would register them. Batches follow the multi-crop contract: global views
view-major in ``image``, local crops view-major in ``local_image``; rank r holds a contiguous slice of the images.
"""

from __future__ import annotations

from typing import Any

import torch
from method_zoo_ddp_worker import save_rank_results
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from method_zoo.forwards.swav import QUEUE_KEY, swav_forward
from method_zoo.heads import mlp
from method_zoo.losses.sinkhorn import sinkhorn_knopp
from method_zoo.losses.swav import SwAVLoss
from method_zoo.parts.swav import SwAVPrototypes
from method_zoo.queue import FeatureQueue

IMAGES, LOCAL_VIEWS, STEPS, PROJ_DIM, PROTOTYPES = 8, 2, 6, 8, 10
FROZEN_STEPS = 2  # steps 0-1 are epoch 0 (prototypes frozen), the rest epoch 1 (queue in use)


class SwAVModule(nn.Module):
    def __init__(self, freeze_epochs: int = 1, batch_norm: bool = True, queue_rows: int = 0,
                 queue_start_epoch: int = 0, prototypes: int = PROTOTYPES, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        # Any resolution in, 16 features out: one backbone serves the 8x8 global views and the 4x4 local crops.
        self.backbone = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.projector = mlp(16, 32, PROJ_DIM, hidden_layers=1, batch_norm=batch_norm)
        self.prototypes = SwAVPrototypes(PROJ_DIM, prototypes, freeze_epochs=freeze_epochs)
        self.swav_loss = SwAVLoss()
        self.swav_queue_start_epoch = queue_start_epoch
        self.queues = nn.ModuleDict({QUEUE_KEY: FeatureQueue(queue_rows, PROJ_DIM)} if queue_rows else {})
        self.current_epoch = 0

    def forward(self, batch: dict, stage: str) -> dict:
        return swav_forward(self, batch, stage)


def make_batch(step: int, rank: int = 0, world: int = 1, images: int = IMAGES, local_views: int = LOCAL_VIEWS,
               dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Rank ``rank``'s slice of step ``step``'s global batch (the whole batch when ``world == 1``)."""
    g = torch.Generator().manual_seed(100 + step)
    global_views = torch.randn(images, 2, 1, 8, 8, generator=g, dtype=dtype)
    local_crops = torch.randn(images, local_views, 1, 4, 4, generator=g, dtype=dtype)
    per_rank = images // world
    rows = torch.arange(rank * per_rank, (rank + 1) * per_rank)
    return {
        "image": global_views[rows].transpose(0, 1).flatten(0, 1),
        "sample_idx": rows.repeat(2),
        "local_image": local_crops[rows].transpose(0, 1).flatten(0, 1),
        "local_sample_idx": rows.repeat(local_views),
    }


def train(rank: int, world: int, steps: int = STEPS) -> dict[str, Any]:
    """SGD with weight decay through a frozen epoch and an epoch with the queue; what every step left behind."""
    module = SwAVModule(batch_norm=False, queue_rows=2 * IMAGES, queue_start_epoch=1).double()
    # The frozen prototypes take no gradient in epoch 0, so DDP must be told some parameters may go unused.
    model = DistributedDataParallel(module, find_unused_parameters=True) if world > 1 else module
    optimizer = torch.optim.SGD(module.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)
    losses, prototypes = [], []
    for step in range(steps):
        module.current_epoch = 0 if step < FROZEN_STEPS else 1
        out = model(make_batch(step, rank, world, dtype=torch.float64), "train")
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        module.queues[QUEUE_KEY].push(out[QUEUE_KEY])  # what OnlineQueue does after each training batch
        losses.append(out["loss"].detach())
        prototypes.append(module.prototypes.layer.weight.detach().clone())
    return {"state": {k: v.detach().clone() for k, v in module.state_dict().items()}, "losses": torch.stack(losses),
            "prototypes": prototypes}


def sinkhorn_scores(rows: int = IMAGES, seed: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    """Global scores ``[rows, K]`` and shared (queue) scores ``[5, K]``, cosine-like values in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(rows, PROTOTYPES, generator=g, dtype=torch.float64) * 2 - 1,
            torch.rand(5, PROTOTYPES, generator=g, dtype=torch.float64) * 2 - 1)


def sinkhorn_probe(rank: int, world: int) -> dict[str, torch.Tensor]:
    scores, shared = sinkhorn_scores()
    mine = torch.tensor_split(scores, world)[rank]
    return {"codes": sinkhorn_knopp(mine), "codes_shared": sinkhorn_knopp(mine, shared=shared)}


def worker(rank: int, world: int, out_dir: str) -> None:
    """Joins the store the test hosts (its address is in the inherited environment) and saves what it computed."""
    save_rank_results(rank, world, None, out_dir,
                      lambda: {"sinkhorn": sinkhorn_probe(rank, world), "train": train(rank, world)})
