"""Collectives that keep autograd intact, for losses computed over the global batch.

Every helper is the identity when torch.distributed is not initialised, so the same loss code runs in a
single process, under DDP and under FSDP. All ranks must pass tensors of the same shape: this is what
DistributedSampler gives (it pads the dataset so every rank sees the same number of samples).

Why gradients are summed in backward: under DDP each rank ``r`` computes its own loss ``L_r`` from the
gathered tensor, and the gradient reaching rank r's local rows is the sum over all ranks of
``dL_r'/d(rows of r)``. DDP then averages parameter gradients over ranks, so the update is the gradient
of ``mean_r L_r`` -- exactly what one process would compute on the concatenated batch, provided each
loss is written so that ``mean_r L_r`` equals the single-process loss (see the losses).
"""

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


def _all_gather_cat(x: Tensor) -> Tensor:
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


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
