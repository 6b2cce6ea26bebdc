"""The LightningDataModule every job uses: training views, validation images and the kNN bank."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from orchestra.data.arrays import ImageArrays, load_arrays
from orchestra.data.augment import PRESETS
from orchestra.data.batches import AugmentedViews, BatchKey, EpochBatchSampler, PlainImages
from orchestra.data.views import ViewBuilder, is_raw, resolve_pipeline
from orchestra.errors import UserError

# Lightning warns once when the DataModule and the Module both define on_after_batch_transfer, then calls only the
# DataModule's; ours calls the Module's itself, so that warning would only mislead.
warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer` in both")


class Normalize:
    """Per-channel standardisation with statistics measured on the training images."""

    def __init__(self, images: torch.Tensor) -> None:
        stats = getattr(images, "channel_stats", None)
        if stats is not None:  # a packed set measured all its training images when it was packed: no read here
            self.mean, self.std = (torch.tensor(s).view(1, -1, 1, 1) for s in stats)
            self.std = self.std.clamp(min=1e-3)
            return
        sample = images[:10_000].float().div(255)
        self.mean = sample.mean(dim=(0, 2, 3)).view(1, -1, 1, 1)
        self.std = sample.std(dim=(0, 2, 3)).clamp(min=1e-3).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)  # views may be built on the training device


def bank_rows(total: int, size: int | None, seed: int) -> torch.Tensor | None:
    """The training rows of a kNN bank of ``size`` images: a seeded random subset, sorted; None means all rows.

    A function of (total, size, seed) alone, so every validation, every rank and every resumed attempt embeds the
    same images; the bank costs what ``size`` says, whatever the training set's size (1.28M ImageNet images).
    """
    if size is None or size >= total:
        return None
    generator = torch.Generator().manual_seed(seed * 1_000_003 + 17)  # its own stream, not the shuffles' draws
    return torch.randperm(total, generator=generator)[:size].sort().values


class BankSubset(Dataset):
    """Evaluation batches of some rows of another keyed dataset: batch positions map to those rows, and
    ``sample_idx`` stays the original training row (sorted rows keep the gathered bank in subset order)."""

    def __init__(self, dataset: Dataset, rows: torch.Tensor) -> None:
        self.dataset, self.rows = dataset, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: BatchKey) -> dict[str, torch.Tensor]:
        return self.dataset[replace(key, rows=self.rows[key.rows])]


def _pair(scale) -> tuple[float, float] | None:
    return None if scale is None else (float(scale[0]), float(scale[1]))


def loader_workers(setting: int | str) -> int:
    """``data.num_workers``: an integer, or ``auto`` = the CPUs this job may use (SLURM_CPUS_PER_TASK under SLURM,
    else the process's CPU affinity) less one for the training process itself."""
    if setting != "auto":
        return int(setting)
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    cpus = int(slurm) if slurm.isdigit() else len(os.sched_getaffinity(0))
    return max(0, cpus - 1)


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
        num_workers: int | str = 0,
        train_limit: int | None = None,
        val_limit: int | None = None,
        local_views: int = 0,
        local_size: int | None = None,
        global_crop_scale: tuple[float, float] | None = None,
        local_crop_scale: tuple[float, float] | None = None,
        prefetch: int | None = None,
        decode_size: int | None = None,
        skip_bad_images: bool = False,
        pipeline: str = "auto",
        accelerator: str | None = None,
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
        self.prefetch, self.decode_size, self.skip_bad_images = prefetch, decode_size, skip_bad_images
        # where training views are built: "cpu" in the loader, "gpu" on the training device after the transfer
        self.pipeline = resolve_pipeline(pipeline, accelerator)
        self.device_views: ViewBuilder | None = None
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
        from orchestra.data.imagefolder import folder_splits, load_folders

        if self.train is not None:
            return
        # val and the kNN bank take train's class-to-index mapping and the limits' class-spread subsets
        index = load_folders({**self.described, "root": self.root, "train_limit": self.train_limit,
                              "val_limit": self.val_limit})
        size = self.image_size or 224
        # pipeline=gpu: the loader hands over raw uint8 batches and on_after_batch_transfer builds the views
        self.folders = folder_splits(index, size, self.views, self.seed, self.recipe, self.local_views,
                                     self.local_size, self.decode_size, self.skip_bad_images,
                                     build_views=self.pipeline != "gpu")
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
        workers = loader_workers(self.num_workers)
        trainer = self.trainer
        on_cuda = trainer is not None and trainer.strategy.root_device.type == "cuda"
        return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=workers,
                          persistent_workers=workers > 0, pin_memory=on_cuda,
                          prefetch_factor=(self.prefetch or 2) if workers else None)

    def train_dataloader(self) -> DataLoader:
        if self.dataset == "imagefolder":
            return self._loader(self.folders["train"], self.batch_size, shuffle=True, sharded=True)
        views = AugmentedViews(self.train, self.recipe, self.views, self.size, self.seed, self.normalize,
                               local_views=self.local_views, local_size=self.local_size,
                               raw=self.pipeline == "gpu")
        return self._loader(views, self.batch_size, shuffle=True, sharded=True)

    def _device_view_builder(self) -> ViewBuilder:
        if self.is_folder:
            from orchestra.data.imagefolder import view_builder

            return view_builder(self.recipe, self.views, self.image_size or 224, self.seed, self.local_views,
                                self.local_size)
        return ViewBuilder(self.recipe, self.views, self.size, self.seed, self.normalize, self.local_views,
                           self.local_size)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """data.pipeline=gpu: a raw training batch becomes its views here, on the device it was moved to.

        Lightning runs this hook under every strategy (``Strategy.batch_to_device``) and, as the DataModule has one,
        skips the Module's; that one (channels_last) runs here after the views are built.
        """
        if is_raw(batch):
            if self.device_views is None:
                self.device_views = self._device_view_builder()
            batch = self.device_views(batch)
        module = self.trainer.lightning_module if self.trainer is not None else None
        return module.on_after_batch_transfer(batch, dataloader_idx) if module is not None else batch

    def val_dataloader(self) -> DataLoader:
        if self.dataset == "imagefolder":
            return self._loader(self.folders["val"], self.eval_batch_size, False, True)
        return self._loader(PlainImages(self.test, self.size, self.normalize), self.eval_batch_size, False, True)

    def bank_dataloader(self, sharded: bool = False, size: int | None = None) -> DataLoader:
        """Unaugmented training images for the kNN bank; ``sharded``: this rank's share of every batch only;
        ``size``: a fixed seeded subset of that many training images (``bank_rows``), all of them when None."""
        if self.dataset == "imagefolder":
            images = self.folders["bank"]
        else:
            images = PlainImages(self.train, self.size, self.normalize)
        rows = bank_rows(len(images), size, self.seed)
        if rows is not None:
            images = BankSubset(images, rows)
        return self._loader(images, self.eval_batch_size, False, sharded)

    @property
    def num_classes(self) -> int:
        if self.dataset == "imagefolder":  # a train_limit below the class count may leave the last classes out
            return len(self.folder_classes)
        return int(self.train.labels.max()) + 1

    @property
    def is_folder(self) -> bool:
        """Images from a folder tree, read as files or packed: too many pixels for the raw-pixel kNN floors."""
        return self.dataset in ("imagefolder", "packed")


def build_datamodule(data_cfg: dict, seed: int, accelerator: str | None = None) -> ImageDataModule:
    """``accelerator``: the trainer's (``trainer.accelerator``), which ``data.pipeline=auto`` follows."""
    options: dict[str, Callable | object] = dict(data_cfg)
    options["seed"] = seed
    options["accelerator"] = accelerator
    return ImageDataModule(**options)
