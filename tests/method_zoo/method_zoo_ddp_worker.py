"""Code run inside spawned gloo ranks by test_ddp_equivalence.py (kept out of the test module so that the
spawned children can import it by a plain module name whatever pytest's import mode is)."""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import method_zoo as mz
from method_zoo import distributed

IMAGES_PER_STEP, STEPS, D_IN = 8, 5, 6
METHODS: dict[str, tuple[Any, str, Any, float]] = {
    "simclr": (mz.simclr_forward, "simclr_loss", lambda: mz.NTXEntLoss(0.5), 0.5),
    "vicreg": (mz.vicreg_forward, "vicreg_loss", mz.VICRegLoss, 0.02),
    "barlow": (mz.barlow_twins_forward, "barlow_loss", mz.BarlowTwinsLoss, 0.05),
}


class TinyModule(nn.Module):
    """No BatchNorm: per-rank BN statistics would legitimately differ from the single-process run."""

    def __init__(self, method: str) -> None:
        super().__init__()
        forward, loss_attr, make_loss, _ = METHODS[method]
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Linear(D_IN, 16), nn.ReLU(), nn.Linear(16, 8)).double()
        self.projector = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 6)).double()
        setattr(self, loss_attr, make_loss())
        self._method = forward

    def forward(self, batch: dict, stage: str) -> dict:
        return self._method(self, batch, stage)


def make_batch(step: int, rank: int, world: int) -> dict:
    """Rank ``rank``'s share of the step's global batch: its images' two views, rows shuffled.

    Rows are shuffled once globally and each rank keeps its images' rows in that order, so every image's
    first row (which split_views treats as view a) is the same in the DDP and single-process runs.
    """
    g = torch.Generator().manual_seed(1000 + step)
    views = torch.randn(IMAGES_PER_STEP, 2, D_IN, generator=g, dtype=torch.float64)
    image = views.reshape(2 * IMAGES_PER_STEP, D_IN)
    sample_idx = torch.arange(IMAGES_PER_STEP).repeat_interleave(2)
    perm = torch.randperm(image.shape[0], generator=g)
    per_rank = IMAGES_PER_STEP // world
    perm = perm[sample_idx[perm] // per_rank == rank]
    return {"image": image[perm], "sample_idx": sample_idx[perm]}


def train(method: str, rank: int, world: int) -> dict[str, torch.Tensor]:
    module = TinyModule(method)
    model = DistributedDataParallel(module) if world > 1 else module
    optimizer = torch.optim.SGD(module.parameters(), lr=METHODS[method][3])
    for step in range(STEPS):
        loss = model(make_batch(step, rank, world), "train")["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def collective_probe(rank: int, world: int) -> dict[str, torch.Tensor]:
    """Linear functionals of the collectives' outputs, so the exact input gradient is known in closed form."""
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    w_gather = torch.randn(3 * world, 4, generator=g, dtype=torch.float64)
    w_reduce = torch.randn(3, 4, generator=g, dtype=torch.float64)
    gathered = distributed.gather_with_grad(x)
    reduced = distributed.all_reduce_with_grad(x)
    ((gathered * w_gather).sum() + (reduced * w_reduce).sum()).backward()
    return {
        "gathered": gathered.detach(),
        "reduced": reduced.detach(),
        "no_grad": distributed.gather_no_grad(x),
        "grad": x.grad.clone(),
    }


def save_rank_results(rank: int, world: int, port: int | None, out_dir: str, compute: Callable[[], Any]) -> None:
    """One spawned rank: join the gloo group (at 127.0.0.1:``port``, or with None at the address the test's hosted
    store put in the inherited environment), save what ``compute`` returns as ``rank<r>.pt``, leave the group."""
    torch.set_num_threads(1)
    if port is not None:
        os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.save(compute(), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def worker(rank: int, world: int, port: int, out_dir: str) -> None:
    def compute() -> dict[str, Any]:
        results: dict[str, Any] = {
            "probe": collective_probe(rank, world),
            "rank": (distributed.rank(), distributed.world_size()),
        }
        for method in METHODS:
            results[method] = train(method, rank, world)
        return results

    save_rank_results(rank, world, port, out_dir, compute)
