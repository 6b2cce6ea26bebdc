"""Regrouping a flat multi-view batch into one tensor per view.

Data loaders hand us ``[N * views, ...]`` rows in whatever order the collate produced; ``sample_idx``
says which rows come from the same image. Methods want ``views`` tensors of shape ``[N, ...]`` whose
row i all describe the same image.
"""

import torch
from torch import Tensor

from method_zoo.errors import MethodError


def split_views(x: Tensor, sample_idx: Tensor, n_views: int, method: str) -> list[Tensor]:
    """Return ``n_views`` tensors ``[N, ...]`` aligned by sample; rows of one image keep their batch order.

    Raises MethodError (one line) when any image does not have exactly ``n_views`` rows.
    """
    if sample_idx.ndim != 1 or sample_idx.shape[0] != x.shape[0]:
        raise MethodError(
            f"{method}: batch['sample_idx'] must be 1-D with one entry per row "
            f"(got shape {tuple(sample_idx.shape)} for {x.shape[0]} rows)"
        )
    rows = x.shape[0]
    if sample_idx.device.type == "cpu" and rows % n_views == 0:
        # The loaders' layout (view v of image i at row v * N + i) checked on the host: no wait for the accelerator.
        # Rows keep their batch order, so DDP ranks' slices concatenate to the single-process order.
        n = rows // n_views
        first = sample_idx[:n]
        if torch.equal(sample_idx, first.repeat(n_views)) and first.unique().numel() == n:
            return list(x.reshape(n_views, n, *x.shape[1:]).unbind(dim=0))
    # Stable sort keeps the within-image order of views, so "view 0" is whichever row came first.
    order = sample_idx.argsort(stable=True)
    counts = sample_idx[order].unique_consecutive(return_counts=True)[1]
    wrong = counts[counts != n_views]
    if wrong.numel() > 0:
        low, high = int(counts.min()), int(counts.max())
        found = str(low) if low == high else f"between {low} and {high}"
        raise MethodError(
            f"{method} needs {n_views} views per image but the batch has {found} "
            f"(batch['sample_idx'] groups rows by image); set data.views={n_views}"
        )
    grouped = x[order.to(x.device, non_blocking=True)].reshape(counts.numel(), n_views, *x.shape[1:])
    return list(grouped.unbind(dim=1))
