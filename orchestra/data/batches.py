"""Batches drawn as a pure function of (seed, epoch, batch index), sharded across ranks.

The sampler yields whole-batch keys; the dataset turns a key into the batch dict of the seed's contract
(``image`` as ``[rows, C, H, W]``, ``sample_idx`` naming which rows are views of one image, ``label``; with local
crops also ``local_image`` and ``local_sample_idx``). Each rank takes a contiguous slice of the same global batch, per
view, so 2 ranks see exactly what 1 process sees. Training batches go through a raw batch (``views.py``): the
loader either builds the views itself (``data.pipeline=cpu``) or hands the raw batch on for the training device to
build them after the transfer (``gpu``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from orchestra.data.arrays import ImageArrays
from orchestra.data.augment import AugmentSpec, Recipe
from orchestra.data.views import LOCAL_STREAM, ViewBuilder
from orchestra.data.views import stream as _generator


@dataclass(frozen=True)
class BatchKey:
    epoch: int
    index: int
    rows: torch.Tensor  # global dataset rows of this batch
    rank: int
    world_size: int


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


__all__ = ["LOCAL_STREAM", "AugmentedViews", "BatchKey", "EpochBatchSampler", "PlainImages", "raw_batch"]


def _local(tensor: torch.Tensor, key: BatchKey) -> torch.Tensor:
    return torch.tensor_split(tensor, key.world_size)[key.rank]


def raw_batch(images: torch.Tensor, labels: torch.Tensor, key: BatchKey) -> dict[str, torch.Tensor]:
    """The raw batch (``views.py``) of this rank's rows: ``images``/``labels`` already hold only those rows."""
    return {
        "raw": images,
        "label": labels,
        "sample_idx": _local(key.rows, key),
        "batch_key": torch.tensor([key.epoch, key.index, key.rank, key.world_size, len(key.rows)], dtype=torch.int64),
    }


class AugmentedViews(Dataset):
    """Training batches: ``views`` augmented copies of every image, view-major, and ``local_views`` local crops.

    ``recipe`` may be a single spec (every view alike, as before recipes existed). Only this rank's images are read;
    each view's parameters are drawn for the whole global batch and applied to this rank's rows, so a shard never
    depends on the world size. With ``raw=True`` the batch is returned raw, for ``builder`` to run on the device.
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
        raw: bool = False,
    ) -> None:
        self.arrays, self.raw = arrays, raw
        self.builder = ViewBuilder(recipe, views, size, seed, normalize, local_views, local_size)

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, key: BatchKey) -> dict[str, torch.Tensor]:
        rows = _local(key.rows, key)
        batch = raw_batch(self.arrays.take(rows), self.arrays.labels[rows], key)
        return batch if self.raw else self.builder(batch)


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
