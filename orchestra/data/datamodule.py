"""The LightningDataModule every job uses: training views, validation images and the kNN bank."""

from __future__ import annotations

from collections.abc import Callable

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from orchestra.data.arrays import ImageArrays, load_arrays
from orchestra.data.augment import PRESETS
from orchestra.data.batches import AugmentedViews, EpochBatchSampler, PlainImages
from orchestra.errors import UserError


class Normalize:
    """Per-channel standardisation with statistics measured on the training images."""

    def __init__(self, images: torch.Tensor) -> None:
        sample = images[:10_000].float().div(255)
        self.mean = sample.mean(dim=(0, 2, 3)).view(1, -1, 1, 1)
        self.std = sample.std(dim=(0, 2, 3)).clamp(min=1e-3).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _pair(scale) -> tuple[float, float] | None:
    return None if scale is None else (float(scale[0]), float(scale[1]))


class ImageDataModule(pl.LightningDataModule):
    def __init__(
        self,
        dataset: str = "mnist10k",
        root: str | None = None,
        download: bool = False,
        batch_size: int = 256,
        eval_batch_size: int = 1000,
        views: int = 2,
        augment: str = "digits",
        image_size: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        train_limit: int | None = None,
        val_limit: int | None = None,
        local_views: int = 0,
        local_size: int | None = None,
        global_crop_scale: tuple[float, float] | None = None,
        local_crop_scale: tuple[float, float] | None = None,
        **described: object,  # descriptive keys (channels, num_classes): image folders are checked against them
    ) -> None:
        super().__init__()
        if augment not in PRESETS:
            raise UserError(f"unknown data.augment '{augment}'; known: {', '.join(PRESETS)}")
        if views < 1:
            raise UserError(f"data.views must be at least 1, got {views}")
        if local_views < 0:
            raise UserError(f"data.local_views must be 0 or more, got {local_views}")
        self.dataset, self.root, self.download = dataset, root, download
        self.batch_size, self.eval_batch_size, self.views = batch_size, eval_batch_size, views
        self.recipe = PRESETS[augment].scaled(_pair(global_crop_scale), _pair(local_crop_scale))
        self.image_size, self.seed = image_size, seed
        self.local_views, self.local_size = local_views, local_size
        self.num_workers, self.train_limit, self.val_limit = num_workers, train_limit, val_limit
        self.described = described
        self.train: ImageArrays | None = None
        self.test: ImageArrays | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset == "imagefolder":
            self._setup_folders()
            return
        if self.train is None:
            train, test = load_arrays(self.dataset, self.root, self.download)
            self.train, self.test = train.head(self.train_limit), test.head(self.val_limit)
            self.normalize = Normalize(self.train.images)
            self.size = self.image_size or self.train.images.shape[-1]

    def _setup_folders(self) -> None:
        from orchestra.data.imagefolder import FolderBatches, load_folders

        if self.train is not None:
            return
        # val and the kNN bank take train's class-to-index mapping and the limits' class-spread subsets
        index = load_folders({**self.described, "root": self.root, "train_limit": self.train_limit,
                              "val_limit": self.val_limit})
        size = self.image_size or 224
        self.folders = {
            "train": FolderBatches(index.train, size, self.views, self.seed, self.recipe, self.local_views,
                                   self.local_size),
            "val": FolderBatches(index.val, size, 0, self.seed),
            "bank": FolderBatches(index.train, size, 0, self.seed),
        }
        self.folder_classes = index.classes
        self.train = self.folders["train"]

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool, sharded: bool) -> DataLoader:
        rank, world = self._rank() if sharded else (0, 1)
        if shuffle and batch_size % world:  # gathers across ranks need equal shards of every global batch
            raise UserError(f"data.batch_size={batch_size} does not split evenly over {world} ranks; "
                            f"use a multiple of {world}")
        sampler = EpochBatchSampler(len(dataset), batch_size, self.seed, shuffle, drop_last=shuffle, rank=rank,
                                    world_size=world)
        return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        if self.dataset == "imagefolder":
            return self._loader(self.folders["train"], self.batch_size, shuffle=True, sharded=True)
        views = AugmentedViews(self.train, self.recipe, self.views, self.size, self.seed, self.normalize,
                               local_views=self.local_views, local_size=self.local_size)
        return self._loader(views, self.batch_size, shuffle=True, sharded=True)

    def val_dataloader(self) -> DataLoader:
        if self.dataset == "imagefolder":
            return self._loader(self.folders["val"], self.eval_batch_size, False, True)
        return self._loader(PlainImages(self.test, self.size, self.normalize), self.eval_batch_size, False, True)

    def bank_dataloader(self, sharded: bool = False) -> DataLoader:
        """Unaugmented training images for the kNN bank; ``sharded``: this rank's share of every batch only."""
        if self.dataset == "imagefolder":
            return self._loader(self.folders["bank"], self.eval_batch_size, False, sharded)
        return self._loader(PlainImages(self.train, self.size, self.normalize), self.eval_batch_size, False, sharded)

    @property
    def num_classes(self) -> int:
        if self.is_folder:  # a train_limit below the class count may leave the last classes without an image
            return len(self.folder_classes)
        return int(self.train.labels.max()) + 1

    @property
    def is_folder(self) -> bool:
        return self.dataset == "imagefolder"


def build_datamodule(data_cfg: dict, seed: int) -> ImageDataModule:
    options: dict[str, Callable | object] = dict(data_cfg)
    options["seed"] = seed
    return ImageDataModule(**options)
