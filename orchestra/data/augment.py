"""Batched random augmentation: what a view may do (``AugmentSpec``, per-view ``Recipe``, the ``PRESETS``).

Every random draw comes from a generator the caller seeds with (seed, epoch, batch, view). That makes the data a pure
function of those numbers: a run resumed from a checkpoint sees exactly the batches an uninterrupted run would, and a
DDP rank's shard is exactly the slice of the single-process batch. Per-sample crops are one ``grid_sample`` call for
the whole batch instead of thousands of small per-image ops; Gaussian blur is two batched matrix products for all
the images it applies to. A preset is a ``Recipe``: one spec per global view (BYOL's and DINO's views differ in
their blur and solarization probabilities) and one for every local crop. The steps themselves live in
``augment_ops`` (draw the parameters, then apply them on any device); the functions here are one-call wrappers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from orchestra.data.augment_ops import (
    apply_blur,
    apply_crop,
    apply_jitter,
    apply_solarize,
    apply_view,
    draw_blur,
    draw_crop,
    draw_jitter,
    draw_view,
)


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


def random_resized_crop(images: torch.Tensor, spec: AugmentSpec, size: int, gen: torch.Generator) -> torch.Tensor:
    """Crop a random area fraction and aspect ratio per image (plus rotation/flip) and resize to ``size``."""
    return apply_crop(images, draw_crop(spec, images.shape[0], gen), size)


def color_jitter(images: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation jitter of ``strength``, each image with p=0.8."""
    return apply_jitter(images, *draw_jitter(strength, images.shape[0], gen))


def gaussian_blur(images: torch.Tensor, p: float, sigma: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """Blur each image with probability ``p``, its own sigma (pixels) drawn from ``sigma``; reflect-padded."""
    return apply_blur(images, *draw_blur(p, sigma, images.shape[0], gen), sigma[1])


def solarize(images: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Invert the pixels at or above 0.5 (images in [0, 1]) of each image with probability ``p``."""
    return apply_solarize(images, torch.rand(images.shape[0], generator=gen) < p)


def augment_batch(images: torch.Tensor, spec: AugmentSpec, size: int, gen: torch.Generator) -> torch.Tensor:
    """uint8 (or float in [0, 1]) ``[N, C, H, W]`` -> float in [0, 1], one random view per image.

    Draws on the CPU from ``gen`` and applies on the images' device (``augment_ops``); blur and solarize draw only
    when their probability is positive, so specs without them produce exactly the views they did before those steps
    existed.
    """
    pixels = images.float().div_(255) if images.dtype == torch.uint8 else images
    return apply_view(pixels, spec, draw_view(spec, pixels.shape[0], pixels.shape[1], gen), size)
