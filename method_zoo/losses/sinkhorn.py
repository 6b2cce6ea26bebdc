"""Sinkhorn-Knopp codes for SwAV (Caron et al., 2020, Sec. 3.1 and Appendix A.1).

The codes ``Q`` of a batch are the entropic optimal transport of the ``B`` samples onto the ``K`` prototypes under
equal partition: as a ``K x B`` matrix, each prototype row sums to ``1/K`` and each sample column to ``1/B``. A few
alternating row/column normalisations of ``exp(scores / epsilon)`` approximate it; the result is scaled by ``B``
so that each sample's code is a distribution over prototypes (sums to 1), the target of a cross-entropy.

The partition constraint is over the GLOBAL batch: under torch.distributed the row sums (and the total) are summed
over ranks, so every rank's columns equal the matching columns of one process run on the concatenated batch.
Column sums need no reduction (a column is one sample, on one rank).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from method_zoo.distributed import is_distributed, world_size


def _all_reduce(x: Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> Tensor:
    """Sum (or max) over ranks in place; the input itself outside distributed runs."""
    if is_distributed() and world_size() > 1:
        dist.all_reduce(x, op=op)
    return x


@torch.no_grad()
def sinkhorn_knopp(scores: Tensor, epsilon: float = 0.05, iterations: int = 3,
                   shared: Tensor | None = None) -> Tensor:
    """Codes ``[n, K]`` (float32 or wider) for this rank's ``scores`` ``[n, K]`` (similarities); no gradient.

    ``shared`` ``[m, K]``: extra samples that every rank holds identically (SwAV's queue of past features). They take
    part in the transport once, not once per rank, and get no codes of their own. Computed in float32 at least:
    ``exp(score / 0.05)`` under half precision overflows.
    """
    if epsilon <= 0 or iterations < 1:
        raise ValueError(f"sinkhorn_knopp needs epsilon > 0 and iterations >= 1 (got {epsilon}, {iterations})")
    dtype = torch.promote_types(scores.dtype, torch.float32)
    local = scores.detach().to(dtype)
    others = shared.detach().to(device=local.device, dtype=dtype) if shared is not None else local[:0]
    # exp of a constant shift is a common factor that the first normalisation divides out; the global maximum keeps
    # exp() finite without changing any code (a per-rank maximum would, since it scales ranks' columns differently).
    top = _all_reduce(local.max().reshape(1).clone(), dist.ReduceOp.MAX)
    top = torch.maximum(top, others.max().reshape(1)) if others.numel() else top
    q_local = torch.exp((local - top) / epsilon).T  # [K, n]
    q_shared = torch.exp((others - top) / epsilon).T  # [K, m]
    n_prototypes = q_local.shape[0]
    n_samples = _all_reduce(torch.tensor([float(q_local.shape[1])], device=local.device, dtype=dtype))
    n_samples = n_samples + q_shared.shape[1]

    total = _all_reduce(q_local.sum().reshape(1)) + q_shared.sum()
    q_local, q_shared = q_local / total, q_shared / total
    for _ in range(iterations):
        # Rows: each prototype receives 1/K of the global mass.
        rows = _all_reduce(q_local.sum(dim=1, keepdim=True)) + q_shared.sum(dim=1, keepdim=True)
        q_local, q_shared = q_local / rows / n_prototypes, q_shared / rows / n_prototypes
        # Columns: each sample gives 1/B (local to the sample's own rank).
        q_local = q_local / q_local.sum(dim=0, keepdim=True) / n_samples
        q_shared = q_shared / q_shared.sum(dim=0, keepdim=True) / n_samples
    # Kept in (at least) float32: bfloat16 codes would round the small probabilities the targets are made of.
    return (q_local * n_samples).T
