"""Batches drawn as a pure function of (seed, epoch, batch index), sharded across ranks.

The sampler yields whole-batch keys; the dataset turns a key into the batch dict of the seed's contract
(``image`` as ``[rows, C, H, W]``, ``sample_idx`` naming which rows are views of one image, ``label``; with local
crops also ``local_image`` and ``local_sample_idx``). Each rank takes a contiguous slice of the same global batch, per
view, so 2 ranks see exactly what 1 process sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from orchestra.data.arrays import ImageArrays
from orchestra.data.augment import AugmentSpec, Recipe, augment_batch


@dataclass(frozen=True)
class BatchKey:
    epoch: int
    index: int
    rows: torch.Tensor  # global dataset rows of this batch
    rank: int
    world_size: int


def _generator(*numbers: int) -> torch.Generator:
    seed = 0
    for number in numbers:  # a simple mix; distinct tuples give distinct streams
        seed = (seed * 1_000_003 + int(number) + 1) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


class EpochBatchSampler(Sampler[BatchKey]):
    """Shuffles once per epoch from ``(seed, epoch)``; Lightning calls ``set_epoch`` before each epoch."""

    def __init__(
        self, size: int, batch_size: int, seed: int, shuffle: bool, drop_last: bool, rank: int = 0, world_size: int = 1
    ) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.shuffle, self.drop_last = shuffle, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches already done) after a mid-epoch checkpoint

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.size, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def __iter__(self):
        order = torch.randperm(self.size, generator=_generator(self.seed, self.epoch)) if self.shuffle else None
        first = 0
        if self.resume_at is not None and self.resume_at[0] == self.epoch:
            first = self.resume_at[1]
        self.resume_at = None
        for index in range(first, len(self)):
            start = index * self.batch_size
            rows = torch.arange(start, min(start + self.batch_size, self.size))
            if order is not None:
                rows = order[rows]
            yield BatchKey(self.epoch, index, rows, self.rank, self.world_size)


LOCAL_STREAM = 1  # local crop j draws from (seed, epoch, batch, j, LOCAL_STREAM): apart from the global views' streams


def _local(tensor: torch.Tensor, key: BatchKey) -> torch.Tensor:
    return torch.tensor_split(tensor, key.world_size)[key.rank]


class AugmentedViews(Dataset):
    """Training batches: ``views`` augmented copies of every image, view-major, and ``local_views`` local crops.

    ``recipe`` may be a single spec (every view alike, as before recipes existed). Each view is drawn for the whole
    global batch from its own generator and then sliced to this rank, so a shard never depends on the world size.
    """

    def __init__(
        self,
        arrays: ImageArrays,
        recipe: AugmentSpec | Recipe,
        views: int,
        size: int,
        seed: int,
        normalize,
        local_views: int = 0,
        local_size: int | None = None,
    ) -> None:
        self.arrays, self.views, self.size, self.seed = arrays, views, size, seed
        self.recipe = recipe if isinstance(recipe, Recipe) else Recipe((recipe,), recipe)
        self.normalize = normalize
        self.local_views, self.local_size = local_views, local_size or max(1, size // 2)

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, key: BatchKey) -> dict[str, torch.Tensor]:
        images = self.arrays.images[key.rows].float().div_(255)  # once for all views and crops
        local_rows = _local(key.rows, key)
        views = []
        for view in range(self.views):
            gen = _generator(self.seed, key.epoch, key.index, view)
            views.append(_local(augment_batch(images, self.recipe.for_view(view), self.size, gen), key))
        batch = {
            "image": self.normalize(torch.cat(views)),
            "label": self.arrays.labels[local_rows].repeat(self.views),
            "sample_idx": local_rows.repeat(self.views),
        }
        if self.local_views:
            crops = []
            for view in range(self.local_views):
                gen = _generator(self.seed, key.epoch, key.index, view, LOCAL_STREAM)
                crops.append(_local(augment_batch(images, self.recipe.local, self.local_size, gen), key))
            batch["local_image"] = self.normalize(torch.cat(crops))
            batch["local_sample_idx"] = local_rows.repeat(self.local_views)
        return batch


class PlainImages(Dataset):
    """Evaluation batches: every image once, unaugmented (resized when the model expects another size)."""

    def __init__(self, arrays: ImageArrays, size: int, normalize) -> None:
        self.arrays, self.size, self.normalize = arrays, size, normalize

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, key: BatchKey) -> dict[str, torch.Tensor]:
        rows = _local(key.rows, key)
        images = self.arrays.images[rows].float().div_(255)
        if images.shape[-1] != self.size:
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return {"image": self.normalize(images), "label": self.arrays.labels[rows], "sample_idx": rows}
