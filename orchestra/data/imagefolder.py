"""Image folders (``root/train/<class>/*.jpg``, ``root/val/<class>/*.jpg``) with per-image torchvision v2 views.

Batches come from the same (seed, epoch, batch) keys as the in-memory datasets: the global RNG is forked and seeded
from the key around each batch, so a resumed run or a DDP shard sees the images the uninterrupted run would.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Dataset

from orchestra.data.batches import BatchKey, _generator, _local
from orchestra.errors import UserError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _folder(root: str | None, split: str):
    from torchvision.datasets import ImageFolder

    if root is None:
        raise UserError("data=imagefolder needs data.root=/path/with/train_and_val_folders")
    path = Path(root).expanduser() / split
    if not path.is_dir():
        raise UserError(f"image folder {path} does not exist; data.root must hold train/<class>/ and val/<class>/")
    return ImageFolder(str(path))


def view_transform(size: int):
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.2, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def eval_transform(size: int):
    from torchvision.transforms import v2

    return v2.Compose([
        v2.Resize(int(size * 8 / 7), antialias=True), v2.CenterCrop(size),
        v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class FolderBatches(Dataset):
    """A batch of ``views`` augmented copies (view-major) or, with ``views=0``, of plain evaluation images."""

    def __init__(self, root: str | None, split: str, size: int, views: int, seed: int) -> None:
        self.folder = _folder(root, split)
        self.views, self.seed = views, seed
        self.transform = view_transform(size) if views else eval_transform(size)

    def __len__(self) -> int:
        return len(self.folder)

    @property
    def labels(self) -> torch.Tensor:
        return torch.as_tensor(self.folder.targets)

    def __getitem__(self, key: BatchKey) -> dict[str, torch.Tensor]:
        rows = _local(key.rows, key)
        images = [self.folder.loader(self.folder.samples[int(i)][0]) for i in rows]
        labels = self.labels[rows]
        if not self.views:
            return {"image": torch.stack([self.transform(im) for im in images]), "label": labels, "sample_idx": rows}
        with torch.random.fork_rng():
            torch.manual_seed(_generator(self.seed, key.epoch, key.index).initial_seed())
            views = [torch.stack([self.transform(im) for im in images]) for _ in range(self.views)]
        return {"image": torch.cat(views), "label": labels.repeat(self.views), "sample_idx": rows.repeat(self.views)}
