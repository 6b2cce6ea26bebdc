"""I-JEPA's multi-block masking (Assran et al., CVPR 2023, section 3), as a pure function of (seed, epoch, image).

Per image: ``M`` target blocks (scale 0.15-0.2 of the patch grid, aspect ratio 0.75-1.5) and one context block
(scale 0.85-1.0, aspect 1) from which every target patch is removed, so the context never shows what it predicts.
Every random number is a hash of (seed, epoch, image index, attempt, block, field) from :mod:`method_zoo.masking`,
so DDP ranks draw exactly their images' blocks and a resumed run redraws them, with no generator state.

Batching follows the paper's collator: each target block and the context keep the batch's minimum patch count,
the first ones in grid order. :func:`batch_indices` takes those counts as an argument so the forward can take the
minimum over *all* ranks, which makes a DDP step identical to one process on the whole batch.
"""

import math
from typing import NamedTuple

import torch
from torch import Tensor

from method_zoo.errors import MethodError
from method_zoo.masking import _MASK32, _combine, hash32

_ATTEMPTS = 16  # redraws (new hash key) for an image whose targets leave too little context; the paper retries too


class BlockMasks(NamedTuple):
    context: Tensor  # [B, P] bool: the context patches (context block minus every target block)
    targets: Tensor  # [B, M, P] bool: each target block's patches


class BlockIndices(NamedTuple):
    context: Tensor  # [B, Kc] int64, ascending grid indices
    targets: Tensor  # [B, M, Kt] int64, ascending grid indices per block


def _uniform(h: Tensor, block: Tensor, field: int, low: float, high: float) -> Tensor:
    """A float64 in [low, high) for each (image, block), from the hash of (image key, block, field)."""
    bits = _combine(_combine(h, block), field)
    return low + (high - low) * bits.double() / 2.0**32


def _block_size(scale: Tensor, aspect: Tensor, grid: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Rows and columns of a block covering ``scale`` of the grid with height/width ``aspect``: the released code's
    rounding, kept strictly inside the grid when it has more than one row/column (as that code does) and >= 1."""
    rows, cols = grid
    area = scale * rows * cols
    h = torch.sqrt(area * aspect).round().clamp(1, max(rows - 1, 1)).long()
    w = torch.sqrt(area / aspect).round().clamp(1, max(cols - 1, 1)).long()
    return h, w


def _rectangles(h_key: Tensor, block: Tensor, scale: tuple[float, float], aspect: tuple[float, float],
                grid: tuple[int, int]) -> Tensor:
    """``[B, n, rows * cols]`` bool masks of one rectangle per (image, block), uniform in size and position.

    Sizes are drawn per image (the release draws one size per batch step and positions per image): per-image draws
    keep every image's blocks independent of which other images share its batch or rank."""
    rows, cols = grid
    s = _uniform(h_key, block, 0, *scale)
    # Log-uniform aspect, as the released code draws it, so 0.75 and 1.5 are equally likely around 1.
    a = torch.exp(_uniform(h_key, block, 1, math.log(aspect[0]), math.log(aspect[1])))
    h, w = _block_size(s, a, grid)
    top = (_uniform(h_key, block, 2, 0.0, 1.0) * (rows - h + 1)).long()
    left = (_uniform(h_key, block, 3, 0.0, 1.0) * (cols - w + 1)).long()
    r = torch.arange(rows, device=h.device).repeat_interleave(cols).view(1, 1, -1)
    c = torch.arange(cols, device=h.device).repeat(rows).view(1, 1, -1)
    inside = (r >= top.unsqueeze(-1)) & (r < (top + h).unsqueeze(-1))
    return inside & (c >= left.unsqueeze(-1)) & (c < (left + w).unsqueeze(-1))


def _draw(sample_idx: Tensor, attempt: int, grid: tuple[int, int], seed: int, epoch: int, num_targets: int,
          target_scale: tuple[float, float], target_aspect: tuple[float, float],
          context_scale: tuple[float, float]) -> BlockMasks:
    base = hash32(torch.tensor(int(seed) & _MASK32, dtype=torch.int64))
    h_key = _combine(_combine(_combine(base, int(epoch)), sample_idx.to(torch.int64).view(-1, 1)), attempt)
    blocks = torch.arange(num_targets + 1, dtype=torch.int64, device=sample_idx.device).view(1, -1)
    targets = _rectangles(h_key, blocks[:, :num_targets], target_scale, target_aspect, grid)
    context = _rectangles(h_key, blocks[:, num_targets:], context_scale, (1.0, 1.0), grid)[:, 0]
    return BlockMasks(context & ~targets.any(dim=1), targets)


def block_masks(sample_idx: Tensor, grid: tuple[int, int], seed: int, epoch: int, num_targets: int = 4,
                target_scale: tuple[float, float] = (0.15, 0.2), target_aspect: tuple[float, float] = (0.75, 1.5),
                context_scale: tuple[float, float] = (0.85, 1.0), min_context: int = 1) -> BlockMasks:
    """Each image's context and target blocks on a ``grid`` (rows, cols), from (seed, epoch, sample_idx) only.

    An image whose targets leave fewer than ``min_context`` context patches redraws all its blocks with the next
    attempt key (deterministically); after ``_ATTEMPTS`` failures the configuration is refused in one line.
    """
    if num_targets < 1 or min_context < 1:
        raise MethodError(f"I-JEPA needs num_targets >= 1 and min_context >= 1 (got {num_targets}, {min_context})")
    idx = sample_idx.reshape(-1)
    args = (grid, seed, epoch, num_targets, target_scale, target_aspect, context_scale)
    context, targets = _draw(idx, 0, *args)
    for attempt in range(1, _ATTEMPTS):
        short = (context.sum(dim=1) < min_context).nonzero().flatten()
        if short.numel() == 0:
            return BlockMasks(context, targets)
        context[short], targets[short] = _draw(idx[short], attempt, *args)
    if (context.sum(dim=1) < min_context).any():
        raise MethodError(f"I-JEPA: {num_targets} target blocks of scale {target_scale} leave under {min_context} "
                          f"context patches on a {grid[0]}x{grid[1]} grid; lower module.hparams.num_targets or "
                          "target_scale, or use larger images")
    return BlockMasks(context, targets)


def min_counts(masks: BlockMasks) -> Tensor:
    """``[1 + M]`` int64: the batch's fewest context patches, then the fewest patches of each target block."""
    return torch.cat([masks.context.sum(dim=1).min().view(1), masks.targets.sum(dim=2).min(dim=0).values])


def _first(mask: Tensor, k: int) -> Tensor:
    """The ``k`` lowest indices where ``mask`` is set, per row: a stable sort puts set entries first in grid order."""
    return (~mask).to(torch.uint8).argsort(dim=-1, stable=True)[..., :k]


def batch_indices(masks: BlockMasks, counts: Tensor) -> BlockIndices:
    """Index tensors of equal length across the batch: the first ``counts[0]`` context patches of each image and
    the first ``min(counts[1:])`` patches of each target block (the paper's collator truncates all target blocks of
    a batch to one length, so they stack)."""
    counts = [int(c) for c in counts.tolist()]
    return BlockIndices(_first(masks.context, counts[0]), _first(masks.targets, min(counts[1:])))
