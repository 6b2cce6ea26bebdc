"""Batches drawn as a pure function of (seed, epoch, batch index), sharded across ranks.

The sampler yields whole-batch keys; the dataset turns a key into the batch dict of the seed's contract
(``image`` as ``[rows, C, H, W]``, ``sample_idx`` naming which rows are views of one image, ``label``).
Each rank takes a contiguous slice of the same global batch, so 2 ranks see exactly what 1 process sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from orchestra.data.arrays import ImageArrays
from orchestra.data.augment import AugmentSpec, augment_batch


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


def _local(tensor: torch.Tensor, key: BatchKey) -> torch.Tensor:
    return torch.tensor_split(tensor, key.world_size)[key.rank]


class AugmentedViews(Dataset):
    """Training batches: ``views`` augmented copies of every image, view-major."""

    def __init__(self, arrays: ImageArrays, spec: AugmentSpec, views: int, size: int, seed: int, normalize) -> None:
        self.arrays, self.spec, self.views, self.size, self.seed = arrays, spec, views, size, seed
        self.normalize = normalize

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, key: BatchKey) -> dict[str, torch.Tensor]:
        images = self.arrays.images[key.rows]
        local_rows = _local(key.rows, key)
        views = []
        for view in range(self.views):
            gen = _generator(self.seed, key.epoch, key.index, view)
            views.append(_local(augment_batch(images, self.spec, self.size, gen), key))
        return {
            "image": self.normalize(torch.cat(views)),
            "label": self.arrays.labels[local_rows].repeat(self.views),
            "sample_idx": local_rows.repeat(self.views),
        }


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
