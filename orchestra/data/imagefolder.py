"""Image folders (``root/train/<class>/*.jpg``, ``root/val/<class>/*.jpg``) with per-image torchvision v2 views.

Which files a run uses and their labels come from ``checks.read_folders``: one class-to-index mapping, train's, for
every split, so a val folder lacking one of train's classes cannot shift the labels. Batches come from the same
(seed, epoch, batch) keys as the in-memory datasets: the global RNG is forked and seeded from the key around each
batch, so a resumed run or a DDP shard sees the images the uninterrupted run would.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from orchestra.data.batches import BatchKey, _generator, _local
from orchestra.data.checks import Folders, inspect_imagefolder
from orchestra.errors import UserError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class UnreadableImage(UserError):
    """An image file PIL cannot decode. The message stays one line even when raised in a DataLoader worker."""

    def __init__(self, message: str) -> None:
        # DataLoader re-raises a worker's exception as type("Caught ... in DataLoader worker process N.\nOriginal
        # Traceback ..."), whose last line is "<module>.UnreadableImage: <our line>"; keep only our line.
        if "\n" in message:
            last = message.strip().splitlines()[-1]
            message = last.partition(f"{type(self).__name__}: ")[2] or last
        super().__init__(message)


def load_folders(data: dict) -> Folders:
    """The folders' index for a run, or a UserError naming every problem with them on one line.

    Headers are not verified here: the pre-run check did that, and a bad file still fails in one line as it loads.
    """
    folders, problems = inspect_imagefolder(data, verify_headers=False)
    if problems or folders is None:
        raise UserError("; ".join(problems))
    return folders


def load_rgb(path: str):
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # convert decodes every pixel: a truncated file fails here, not later
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UnreadableImage(f"cannot read image {path} ({err}); replace or delete the file "
                              f"(data.verify_images checks headers before a run)") from None


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

    def __init__(self, samples: list[tuple[str, int]], size: int, views: int, seed: int) -> None:
        self.paths = [path for path, _ in samples]
        self.labels = torch.as_tensor([label for _, label in samples], dtype=torch.int64)
        self.views, self.seed = views, seed
        self.transform = view_transform(size) if views else eval_transform(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: BatchKey) -> dict[str, torch.Tensor]:
        rows = _local(key.rows, key)
        images = [load_rgb(self.paths[int(i)]) for i in rows]
        labels = self.labels[rows]
        if not self.views:
            return {"image": torch.stack([self.transform(im) for im in images]), "label": labels, "sample_idx": rows}
        with torch.random.fork_rng():
            torch.manual_seed(_generator(self.seed, key.epoch, key.index).initial_seed())
            views = [torch.stack([self.transform(im) for im in images]) for _ in range(self.views)]
        return {"image": torch.cat(views), "label": labels.repeat(self.views), "sample_idx": rows.repeat(self.views)}
