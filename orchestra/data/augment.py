"""Batched random augmentation for in-memory images.

Every random draw comes from a generator the caller seeds with (seed, epoch, batch, view). That makes the data a pure
function of those numbers: a run resumed from a checkpoint sees exactly the batches an uninterrupted run would, and a
DDP rank's shard is exactly the slice of the single-process batch. Per-sample crops are one ``grid_sample`` call for
the whole batch instead of thousands of small per-image ops; Gaussian blur is two batched matrix products for all
the images it applies to. A preset is a ``Recipe``: one spec per global view (BYOL's and DINO's views differ in
their blur and solarization probabilities) and one for every local crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F


@dataclass
class AugmentSpec:
    """What a pipeline may do; ``digits`` and ``natural`` presets below."""

    crop_scale: tuple[float, float] = (0.3, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    rotation_degrees: float = 0.0
    horizontal_flip: bool = False
    color_jitter: float = 0.0  # strength of brightness/contrast/saturation jitter, applied with p=0.8
    grayscale_p: float = 0.0
    blur_p: float = 0.0  # probability of a Gaussian blur
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # its standard deviation in output pixels, uniform in this range
    solarize_p: float = 0.0  # probability of inverting the pixels at or above 0.5


@dataclass(frozen=True)
class Recipe:
    """Specs per view: global view v uses ``views[v % len(views)]``, every local crop uses ``local``."""

    views: tuple[AugmentSpec, ...]
    local: AugmentSpec

    def scaled(self, global_scale: tuple[float, float] | None, local_scale: tuple[float, float] | None) -> Recipe:
        """The recipe with ``data.global_crop_scale`` / ``data.local_crop_scale`` put in (None keeps the preset's)."""
        views = self.views if global_scale is None else tuple(replace(v, crop_scale=global_scale) for v in self.views)
        local = self.local if local_scale is None else replace(self.local, crop_scale=local_scale)
        return Recipe(views, local)

    def for_view(self, view: int) -> AugmentSpec:
        return self.views[view % len(self.views)]


LOCAL_CROP_SCALE = (0.05, 0.4)  # DINO's and SwAV's local crops


def _single(spec: AugmentSpec) -> Recipe:
    """A preset whose views are all alike; its local crops differ only in scale."""
    return Recipe((spec,), replace(spec, crop_scale=LOCAL_CROP_SCALE))


def _byol(base: AugmentSpec) -> tuple[AugmentSpec, AugmentSpec]:
    # BYOL's asymmetric pair (Grill et al., 2020, table 6): view 1 always blurred, never solarized; view 2 rarely
    # blurred, solarized with p=0.2. DINO takes the same two globals.
    return replace(base, blur_p=1.0), replace(base, blur_p=0.1, solarize_p=0.2)


_DIGITS = AugmentSpec(crop_scale=(0.6, 1.4), rotation_degrees=15.0)
# On 28-pixel digits BYOL's sigma of up to 2 pixels would erase the strokes; up to 1 pixel still visibly softens them.
_DIGITS_BLURRY = replace(_DIGITS, blur_sigma=(0.1, 1.0))
_NATURAL = AugmentSpec(crop_scale=(0.2, 1.0), horizontal_flip=True, color_jitter=0.4, grayscale_p=0.2)
_NATURAL_DINO = replace(_NATURAL, crop_scale=(0.4, 1.0))  # DINO's ResNet global crops

PRESETS: dict[str, Recipe] = {
    # Digits change meaning when flipped and have no colour. Zooming out as well as in (area 0.6-1.4) keeps the
    # training views centred on the unaugmented images that kNN and the probe see; it beat zoom-in-only crops
    # (0.3-1.0 and 0.5-1.0) by about 1 point of kNN top-1 after 5 SimCLR epochs on the shipped digits.
    "digits": _single(_DIGITS),
    # The SimCLR recipe for natural images (crop, flip, colour jitter 0.4, grayscale 0.2).
    "natural": _single(_NATURAL),
    # BYOL's blur/solarize asymmetry on top of the above; the digits' zoom-out crops stay (see "digits").
    "byol_digits": Recipe(_byol(_DIGITS_BLURRY), replace(_DIGITS_BLURRY, crop_scale=LOCAL_CROP_SCALE, blur_p=0.5)),
    "byol_natural": Recipe(_byol(_NATURAL), replace(_NATURAL, crop_scale=LOCAL_CROP_SCALE, blur_p=0.5)),
    # DINO (Caron et al., 2021): the BYOL pair as globals, local crops blurred with p=0.5 and never solarized.
    "dino_digits": Recipe(_byol(_DIGITS_BLURRY), replace(_DIGITS_BLURRY, crop_scale=LOCAL_CROP_SCALE, blur_p=0.5)),
    "dino_natural": Recipe(_byol(_NATURAL_DINO), replace(_NATURAL_DINO, crop_scale=LOCAL_CROP_SCALE, blur_p=0.5)),
}


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def random_resized_crop(images: torch.Tensor, spec: AugmentSpec, size: int, gen: torch.Generator) -> torch.Tensor:
    """Crop a random area fraction and aspect ratio per image (plus rotation/flip) and resize to ``size``."""
    n = images.shape[0]
    area = _uniform(n, *spec.crop_scale, gen)
    log_ratio = _uniform(n, math.log(spec.crop_ratio[0]), math.log(spec.crop_ratio[1]), gen)
    ratio = log_ratio.exp()
    half_w = (area * ratio).sqrt().clamp(max=2.0)  # half-extent in [-1, 1] coordinates; > 1 zooms out
    half_h = (area / ratio).sqrt().clamp(max=2.0)
    cx = (1 - half_w) * _uniform(n, -1.0, 1.0, gen)
    cy = (1 - half_h) * _uniform(n, -1.0, 1.0, gen)
    angle = torch.deg2rad(_uniform(n, -spec.rotation_degrees, spec.rotation_degrees, gen))
    flip = torch.ones(n)
    if spec.horizontal_flip:
        flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack(
        [
            torch.stack([half_w * cos * flip, -half_h * sin, cx], dim=1),
            torch.stack([half_w * sin * flip, half_h * cos, cy], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, [n, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _gray(images: torch.Tensor) -> torch.Tensor:
    if images.shape[1] == 1:
        return images
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def color_jitter(images: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    n = images.shape[0]
    apply = (torch.rand(n, generator=gen) < 0.8).float().view(n, 1, 1, 1)

    def factor() -> torch.Tensor:
        return _uniform(n, 1 - strength, 1 + strength, gen).view(n, 1, 1, 1)

    out = images * factor()
    mean = _gray(out).mean(dim=(2, 3), keepdim=True)
    out = (out - mean) * factor() + mean
    gray = _gray(out)
    out = (gray + (out - gray) * factor()).clamp(0, 1)
    return apply * out + (1 - apply) * images


def _chosen(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) < p


def _blur_matrices(kernels: torch.Tensor, size: int) -> torch.Tensor:
    """``[n, size, size]``: each image's 1-D kernel (``[n, 2r+1]``) as a matrix, reflecting at the borders."""
    n, width = kernels.shape
    radius = width // 2
    source = (torch.arange(size).view(-1, 1) + torch.arange(-radius, radius + 1)).abs()  # reflect below 0 ...
    source = torch.where(source > size - 1, 2 * (size - 1) - source, source)  # ... and past the last pixel
    matrices = torch.zeros(n, size, size, dtype=kernels.dtype)
    return matrices.scatter_add_(2, source.expand(n, size, width), kernels.view(n, 1, width).expand(n, size, width))


def gaussian_blur(images: torch.Tensor, p: float, sigma: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """Blur each image with probability ``p``, its own sigma (pixels) drawn from ``sigma``; reflect-padded."""
    n, _, height, width = images.shape
    apply = _chosen(n, p, gen)
    sigmas = _uniform(n, *sigma, gen)  # drawn for every image, so the stream does not depend on ``apply``
    chosen = apply.nonzero().squeeze(1)
    if chosen.numel() == 0:
        return images
    # A kernel of +-3 sigma, at most what one reflection covers on this image.
    radius = max(1, min(math.ceil(3 * sigma[1]), height - 1, width - 1))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-(offsets**2) / (2 * sigmas[chosen].to(images.dtype).view(-1, 1) ** 2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    # Separable blur as two batched matrix products (rows, then columns), each image with its own sigma: measured
    # 1.2-2x faster on CPU than a grouped convolution with one group per image and channel, and one kernel on a GPU.
    rows = _blur_matrices(kernel, height).to(images.device).unsqueeze(1)
    cols = _blur_matrices(kernel, width).to(images.device).transpose(1, 2).unsqueeze(1)
    out = images.clone()
    out[chosen] = rows @ images[chosen] @ cols
    return out


def solarize(images: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Invert the pixels at or above 0.5 (images in [0, 1]) of each image with probability ``p``."""
    apply = _chosen(images.shape[0], p, gen).view(-1, 1, 1, 1)
    return torch.where(apply & (images >= 0.5), 1 - images, images)


def augment_batch(images: torch.Tensor, spec: AugmentSpec, size: int, gen: torch.Generator) -> torch.Tensor:
    """uint8 (or float in [0, 1]) ``[N, C, H, W]`` -> float in [0, 1], one random view per image.

    Blur and solarize draw from ``gen`` only when their probability is positive, so specs without them produce
    exactly the views they did before those steps existed.
    """
    pixels = images.float().div_(255) if images.dtype == torch.uint8 else images
    x = random_resized_crop(pixels, spec, size, gen)
    if spec.color_jitter > 0:
        x = color_jitter(x, spec.color_jitter, gen)
    if spec.grayscale_p > 0 and x.shape[1] == 3:
        to_gray = (torch.rand(x.shape[0], generator=gen) < spec.grayscale_p).float().view(-1, 1, 1, 1)
        x = to_gray * _gray(x).expand_as(x) + (1 - to_gray) * x
    if spec.blur_p > 0:
        x = gaussian_blur(x, spec.blur_p, spec.blur_sigma, gen)
    if spec.solarize_p > 0:
        x = solarize(x, spec.solarize_p, gen)
    return x
