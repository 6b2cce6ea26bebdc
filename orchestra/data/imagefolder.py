"""Image folders (``root/train/<class>/*.jpg``, ``root/val/<class>/*.jpg``): files decoded once per batch, then the
same batched augmentation as the in-memory datasets.

Which files a run uses and their labels come from ``checks.read_folders``: one class-to-index mapping, train's, for
every split, so a val folder lacking one of train's classes cannot shift the labels. A training batch is first the
RAW batch: every image decoded once (``decode.decode_resized``, torchvision.io, no PIL) to its centre square of
``data.decode_size`` pixels, uint8. The views are then drawn from that batch by ``ViewBuilder`` (views.py) from the
(seed, epoch, batch) key: in the loader's workers with ``data.pipeline=cpu``, on the device with ``gpu``. So a resumed
run or a DDP shard sees the images the uninterrupted run would, and per-image, per-view torchvision transforms are
gone from the workers (the pattern that made folder data the bottleneck: bench/loader_throughput.py measures it).

Deviation from the usual per-image RandomResizedCrop: the random crops are taken from the decoded centre square, not
from the whole original picture, so the few percent of a non-square image outside that square are never seen in
training. That is what buys one decode, one resize and one uint8 tensor per image for all its views.
"""

from __future__ import annotations

import warnings

import torch
from torch.utils.data import Dataset

from orchestra.data.augment import PRESETS, Recipe
from orchestra.data.batches import BatchKey, _local
from orchestra.data.checks import Folders, inspect_imagefolder
from orchestra.data.decode import UnreadableImage, decode_resized, unreadable  # noqa: F401 (re-exported)
from orchestra.errors import UserError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def load_folders(data: dict) -> Folders:
    """The folders' index for a run, or a UserError naming every problem with them on one line.

    Headers are not verified here: the pre-run check did that, and a bad file still fails in one line as it loads.
    """
    folders, problems = inspect_imagefolder(data, verify_headers=False)
    if problems or folders is None:
        raise UserError("; ".join(problems))
    return folders


def default_decode_size(image_size: int) -> int:
    """The side training images are decoded to: image_size * 8/7 (256 for 224), the usual eval resize."""
    return round(image_size * 8 / 7)


def load_rgb(path: str):
    """The file as a PIL RGB image (kept for callers that compare against the PIL route; training does not use it)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # convert decodes every pixel: a truncated file fails here, not later
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise unreadable(path, err) from None


class ImagenetNormalize:
    """Float images in [0, 1] standardised with ImageNet's channel statistics, on whatever device they are."""

    def __init__(self) -> None:
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


def view_builder(recipe: Recipe, views: int, size: int, seed: int, local_views: int = 0,
                 local_size: int | None = None):
    """The ViewBuilder folders use: ``recipe``'s views of a raw batch, ImageNet-normalised."""
    from orchestra.data.views import ViewBuilder

    return ViewBuilder(recipe, views, size, seed, ImagenetNormalize(), local_views=local_views, local_size=local_size)


class FolderBatches(Dataset):
    """Batches of a folder split, keyed by ``BatchKey``.

    ``views`` > 0: training. The raw batch (``raw`` uint8 ``[rows, 3, decode_size, decode_size]`` of this rank's
    rows, ``label``, ``sample_idx``, ``batch_key``), turned into the contract batch by ``builder`` when one is given
    (``data.pipeline=cpu``) and returned as it is otherwise (the DataModule builds the views on the device).
    ``views`` = 0: evaluation images (val, kNN bank): resized to size * 8/7, centre ``size`` crop, normalised.

    With pipeline=gpu the decoded uint8 batch travels to the device, not the files' bytes for nvjpeg
    (``decode.decode_batch``): decoding stays in the loader's worker processes, overlapped with the step and
    parallel over the CPUs SLURM gives the job; a 256-pixel uint8 batch of 256 is 50 MB, little for PCIe; and a
    damaged file, a non-JPEG and ``skip_bad_images`` are all settled in one place, the worker, the same for both
    pipelines.
    """

    def __init__(self, samples: list[tuple[str, int]], size: int, views: int, seed: int,
                 decode_size: int | None = None, skip_bad_images: bool = False, builder=None) -> None:
        self.paths = [path for path, _ in samples]
        self.labels = torch.as_tensor([label for _, label in samples], dtype=torch.int64)
        self.size, self.views, self.seed, self.builder = size, views, seed, builder
        self.decode_size = decode_size or default_decode_size(size)
        self.skip_bad_images = skip_bad_images
        self.warned: set[str] = set()  # per process: each worker warns once per damaged file it meets
        self.normalize = ImagenetNormalize()

    def __len__(self) -> int:
        return len(self.paths)

    def _decode(self, row: int, size: int) -> torch.Tensor:
        path = self.paths[row]
        try:
            return decode_resized(path, size)
        except UnreadableImage as err:
            if not self.skip_bad_images:
                raise
            if path not in self.warned:
                self.warned.add(path)
                reason = str(err).partition(" (")[2].rpartition("); ")[0]
                warnings.warn(f"skipping unreadable image {path} ({reason}): a zero image stands in for it "
                              f"(data.skip_bad_images=true)", stacklevel=2)
            return torch.zeros(3, size, size, dtype=torch.uint8)

    def __getitem__(self, key: BatchKey) -> dict[str, torch.Tensor]:
        rows = _local(key.rows, key)
        labels = self.labels[rows]
        if not self.views:
            # eval_transform's resize of the short side to size * 8/7, then the centre size x size
            images = torch.stack([self._decode(int(i), default_decode_size(self.size)) for i in rows])
            start = (images.shape[-1] - self.size) // 2
            images = images[..., start:start + self.size, start:start + self.size]
            return {"image": self.normalize(images.float().div_(255)), "label": labels, "sample_idx": rows}
        raw = {
            "raw": torch.stack([self._decode(int(i), self.decode_size) for i in rows]),
            "label": labels,
            "sample_idx": rows,
            "batch_key": torch.tensor([key.epoch, key.index, key.rank, key.world_size, len(key.rows)]),
        }
        return self.builder(raw) if self.builder is not None else raw


def folder_splits(index: Folders, size: int, views: int, seed: int, recipe: Recipe | None = None,
                  local_views: int = 0, local_size: int | None = None, decode_size: int | None = None,
                  skip_bad_images: bool = False, build_views: bool = True) -> dict[str, FolderBatches]:
    """train (raw batches, views built when ``build_views``), val and the kNN bank (evaluation images)."""
    recipe = recipe or PRESETS["natural"]
    builder = view_builder(recipe, views, size, seed, local_views, local_size) if build_views else None
    return {
        "train": FolderBatches(index.train, size, views, seed, decode_size, skip_bad_images, builder),
        "val": FolderBatches(index.val, size, 0, seed, skip_bad_images=skip_bad_images),
        "bank": FolderBatches(index.train, size, 0, seed, skip_bad_images=skip_bad_images),
    }
