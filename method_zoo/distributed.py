"""torch.distributed helpers: collectives that keep autograd intact (for losses over the global batch) and
gathers without gradient (queues, the kNN bank's dataset pass). The one home for gathers and all-reduces.

Outside distributed runs (or with one rank) every helper reduces to its single-process meaning (the input
itself; a stack of one; a sort by row), so the same code runs in a single process, under DDP, FSDP and DeepSpeed.
All ranks must pass tensors of the same shape, which DistributedSampler gives (it pads the dataset so every rank
sees the same number of samples); gather_in_dataset_order alone accepts shards of different lengths.

Why gradients are summed in backward: under DDP each rank ``r`` computes its own loss ``L_r`` from the
gathered tensor, and the gradient reaching rank r's local rows is the sum over all ranks of
``dL_r'/d(rows of r)``. DDP then averages parameter gradients over ranks, so the update is the gradient
of ``mean_r L_r`` -- exactly what one process would compute on the concatenated batch, provided each
loss is written so that ``mean_r L_r`` equals the single-process loss (see the losses).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    """True when a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of ranks, 1 outside distributed runs."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """This process's rank, 0 outside distributed runs."""
    return dist.get_rank() if is_distributed() else 0


def _all_gather(x: Tensor) -> list[Tensor]:
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return parts


def _all_gather_cat(x: Tensor) -> Tensor:
    return torch.cat(_all_gather(x), dim=0)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        ctx.n_local = x.shape[0]  # type: ignore[attr-defined]
        return _all_gather_cat(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        # Each rank holds the gradient of its own loss w.r.t. everyone's rows; our rows' total gradient
        # is the sum of those, of which we keep our slice.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        n = ctx.n_local  # type: ignore[attr-defined]
        start = rank() * n
        return grad[start : start + n]


class _AllReduceWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        out = x.contiguous().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        # y = sum_r x_r on every rank, so d(sum_r' L_r')/dx_r = sum_r' dL_r'/dy_r'.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks along dim 0 (rank order); gradients flow back to every rank."""
    if not is_distributed() or world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def all_reduce_with_grad(x: Tensor) -> Tensor:
    """Sum ``x`` over ranks; the backward pass sums the incoming gradients over ranks too."""
    if not is_distributed() or world_size() == 1:
        return x
    return _AllReduceWithGrad.apply(x)


@torch.no_grad()
def gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate detached ``x`` from all ranks along dim 0, e.g. to fill a queue with the global batch."""
    if not is_distributed() or world_size() == 1:
        return x.detach()
    return _all_gather_cat(x.detach())


@torch.no_grad()
def all_gather_stacked(x: Tensor) -> Tensor:
    """``[world, n, ...]`` from every rank's ``[n, ...]`` (``x[None]`` outside distributed runs); no gradient.

    Plain torch.distributed, so it serves DDP, FSDP and DeepSpeed alike.
    """
    if not is_distributed() or world_size() == 1:
        return x.detach()[None]
    return torch.stack(_all_gather(x.detach()))


@torch.no_grad()
def gather_in_dataset_order(rows: Tensor, *columns: Tensor) -> tuple[Tensor, ...]:
    """Every rank's ``columns``, on every rank, sorted by their dataset ``rows``; no gradient.

    Shards may differ in length (the last batch rarely splits evenly); each is padded to the longest for the
    collective and the padding dropped by its row of -1. Sorting by row makes the result the single-process pass,
    whatever the number of ranks.
    """
    if world_size() == 1:
        order = rows.argsort()
        return tuple(column[order] for column in columns)
    device = columns[0].device
    rows = rows.to(device)
    longest = int(all_gather_stacked(torch.tensor([rows.numel()], device=device)).max())
    gathered_rows = all_gather_stacked(_pad(rows, longest, -1)).flatten()
    keep = gathered_rows >= 0
    order = gathered_rows[keep].argsort()
    return tuple(all_gather_stacked(_pad(column, longest, 0)).flatten(0, 1)[keep][order] for column in columns)


def _pad(tensor: Tensor, length: int, value: float) -> Tensor:
    padding = tensor.new_full((length - tensor.shape[0], *tensor.shape[1:]), value)
    return torch.cat([tensor, padding])
