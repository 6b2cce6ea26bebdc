"""Image folders (``root/train/<class>/*.jpg``, ``root/val/<class>/*.jpg``) with per-image torchvision v2 views.

Which files a run uses and their labels come from ``checks.read_folders``: one class-to-index mapping, train's, for
every split, so a val folder lacking one of train's classes cannot shift the labels. Batches come from the same
(seed, epoch, batch) keys as the in-memory datasets: the global RNG is forked and seeded from the key around each
batch, so a resumed run or a DDP shard sees the images the uninterrupted run would.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

from orchestra.data.augment import PRESETS, AugmentSpec, Recipe
from orchestra.data.batches import LOCAL_STREAM, BatchKey, _generator, _local
from orchestra.data.checks import Folders, inspect_imagefolder
from orchestra.data.decode import UnreadableImage, unreadable  # noqa: F401 (UnreadableImage: its old home)
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


def load_rgb(path: str):
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # convert decodes every pixel: a truncated file fails here, not later
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise unreadable(path, err) from None


def view_transform(size: int, spec: AugmentSpec | None = None):
    """torchvision v2 steps for one view drawn by ``spec`` (default: the ``natural`` preset's global view).

    For ``natural`` the steps are exactly the SimCLR pipeline folders always used (ColorJitter adds hue 0.1, which the
    in-memory tensors lack), so existing folder runs draw the same views; blur and solarize come in only with a spec
    that asks for them.
    """
    from torchvision.transforms import v2

    spec = spec or PRESETS["natural"].for_view(0)
    steps = [v2.RandomResizedCrop(size, scale=spec.crop_scale, ratio=spec.crop_ratio, antialias=True)]
    if spec.rotation_degrees:
        steps.append(v2.RandomRotation(spec.rotation_degrees))
    if spec.horizontal_flip:
        steps.append(v2.RandomHorizontalFlip())
    if spec.color_jitter:
        strength = spec.color_jitter
        steps.append(v2.RandomApply([v2.ColorJitter(strength, strength, strength, 0.1)], p=0.8))
    if spec.grayscale_p:
        steps.append(v2.RandomGrayscale(p=spec.grayscale_p))
    if spec.blur_p:
        kernel = 2 * math.ceil(3 * spec.blur_sigma[1]) + 1
        steps.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=spec.blur_sigma)], p=spec.blur_p))
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if spec.solarize_p:
        steps.append(v2.RandomSolarize(0.5, p=spec.solarize_p))
    return v2.Compose([*steps, v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def eval_transform(size: int):
    from torchvision.transforms import v2

    return v2.Compose([
        v2.Resize(int(size * 8 / 7), antialias=True), v2.CenterCrop(size),
        v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class FolderBatches(Dataset):
    """A batch of ``views`` augmented copies (view-major) or, with ``views=0``, of plain evaluation images.

    With ``local_views`` > 0 also ``local_image``/``local_sample_idx`` (README "Batch contract"), drawn after the
    global views from a stream of their own, so asking for local crops leaves the global views as they were.
    """

    def __init__(self, samples: list[tuple[str, int]], size: int, views: int, seed: int, recipe: Recipe | None = None,
                 local_views: int = 0, local_size: int | None = None) -> None:
        self.paths = [path for path, _ in samples]
        self.labels = torch.as_tensor([label for _, label in samples], dtype=torch.int64)
        self.views, self.seed, self.local_views = views, seed, local_views
        recipe = recipe or PRESETS["natural"]
        self.transforms = [view_transform(size, recipe.for_view(v)) for v in range(views)]
        self.transform = eval_transform(size)
        self.local_transform = view_transform(local_size or size // 2, recipe.local) if local_views else None

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
            views = [torch.stack([transform(im) for im in images]) for transform in self.transforms]
        batch = {"image": torch.cat(views), "label": labels.repeat(self.views), "sample_idx": rows.repeat(self.views)}
        if self.local_transform is not None:
            with torch.random.fork_rng():
                torch.manual_seed(_generator(self.seed, key.epoch, key.index, LOCAL_STREAM).initial_seed())
                crops = [torch.stack([self.local_transform(im) for im in images]) for _ in range(self.local_views)]
            batch["local_image"] = torch.cat(crops)
            batch["local_sample_idx"] = rows.repeat(self.local_views)
        return batch
