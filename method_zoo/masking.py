"""MAE's random patch masking, as a pure function of (seed, epoch, image index, patch index).

Each patch gets a 32-bit hash of those four integers and an image keeps its ``K`` lowest-hashing patches: a uniform
random subset, exactly as MAE's ``argsort(noise)`` draws it, but with no generator state. So the masks of a DDP rank
are exactly its rows of the single-process batch's masks, a run resumed mid-epoch redraws the masks it would have
drawn, and the whole batch is masked in a few tensor ops (no per-image loop).
"""

from typing import NamedTuple

import torch
from torch import Tensor

from method_zoo.errors import MethodError

_MASK32 = 0xFFFFFFFF
# Multipliers of Wellons' "lowbias32" integer hash (good avalanche with two multiply-xorshift rounds).
_M1, _M2 = 0x7FEB352D, 0x846CA68B
_GOLDEN = 0x9E3779B9  # added between chained keys so that (a, b) and (b, a) hash differently


class Masks(NamedTuple):
    keep: Tensor  # [B, K] int64: indices of the visible patches, ascending (grid order)
    mask: Tensor  # [B, P] float: 1 = masked (to be reconstructed), 0 = visible


def _mul32(x: Tensor, constant: int) -> Tensor:
    """``x * constant mod 2**32`` for 0 <= x < 2**32 without int64 overflow: the constant is split in 16-bit halves
    so that no partial product exceeds 2**48."""
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & _MASK32


def hash32(x: Tensor) -> Tensor:
    """A bijective 32-bit integer hash of ``x`` (int64 tensor holding values in [0, 2**32))."""
    x = x ^ (x >> 16)
    x = _mul32(x, _M1)
    x = x ^ (x >> 15)
    x = _mul32(x, _M2)
    return x ^ (x >> 16)


def _combine(h: Tensor, key: Tensor | int) -> Tensor:
    return hash32((h + _GOLDEN + (key & _MASK32)) & _MASK32)


def patch_scores(sample_idx: Tensor, num_patches: int, seed: int, epoch: int) -> Tensor:
    """``[B, P]`` int64 hash of (seed, epoch, sample_idx[i], patch j): the per-patch "noise" MAE sorts."""
    idx = sample_idx.to(torch.int64).reshape(-1, 1)
    patches = torch.arange(num_patches, dtype=torch.int64, device=idx.device).reshape(1, -1)
    h = _combine(_combine(hash32(torch.tensor(int(seed) & _MASK32, dtype=torch.int64)), int(epoch)), idx)
    return _combine(h, patches)


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """K = round(P * (1 - ratio)); at least one patch is seen and at least one is reconstructed."""
    keep = int(round(num_patches * (1.0 - mask_ratio)))
    if not 0.0 < mask_ratio < 1.0 or not 0 < keep < num_patches:
        raise MethodError(f"MAE mask ratio {mask_ratio} leaves {keep} of {num_patches} patches visible; "
                          "set module.hparams.mask_ratio in (0, 1) so that some patches are seen and some masked")
    return keep


def random_masking(sample_idx: Tensor, num_patches: int, mask_ratio: float, seed: int, epoch: int) -> Masks:
    """Keep ``round(P * (1 - mask_ratio))`` patches of each image, chosen by (seed, epoch, sample_idx) only.

    ``sample_idx`` ``[B]`` names each row's image; rows of the same image get the same mask. Ties between hashes
    (rare) are broken by patch index (stable sort), so the result is deterministic on every device.
    """
    k = num_visible(num_patches, mask_ratio)
    order = patch_scores(sample_idx, num_patches, seed, epoch).argsort(dim=1, stable=True)
    # Ascending keep indices: the encoder sees its visible patches in grid order, and unshuffling is one scatter.
    keep = order[:, :k].sort(dim=1).values
    mask = torch.ones(keep.shape[0], num_patches, device=keep.device)
    mask.scatter_(1, keep, 0.0)
    return Masks(keep, mask)
