"""One augmented view in two steps: DRAW every random choice for a global batch, then APPLY them to any rows.

``draw_view`` takes all of a view's random numbers for ``n`` images from a CPU ``torch.Generator``, in the order the
single-step pipeline always took them, so views stay the ones earlier runs saw. ``apply_view`` needs no generator: it
runs on the images' device and takes any subset of the drawn rows (``ViewParams.rows``), which is how a DDP rank
augments only its own shard while drawing for the whole global batch, and how the same views come out of a CPU
DataLoader worker or out of a GPU after the batch is transferred.

Every parameter stays on the CPU until it is used; the rows each step applies to are read there, so applying on a GPU
never waits for the device to answer which images to blur. ``apply_view`` runs the steps in place (``jitter_``,
``gray_``, ...) on the crop's fresh tensor and only on their chosen rows; the ``apply_*`` functions are copies-first
wrappers for callers that keep their input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from orchestra.data.augment import AugmentSpec


@dataclass
class ViewParams:
    """One view's random choices, one row per image; a step the spec lacks holds None (nothing was drawn for it)."""

    theta: torch.Tensor  # [n, 2, 3] affine map from output to input coordinates: crop, rotation, flip
    jitter_on: torch.Tensor | None = None  # [n] float 0/1: colour jitter applied (p=0.8)
    jitter: torch.Tensor | None = None  # [n, 3] brightness, contrast, saturation factors
    gray: torch.Tensor | None = None  # [n] float 0/1: turned to grayscale
    blur_on: torch.Tensor | None = None  # [n] bool: blurred
    sigma: torch.Tensor | None = None  # [n] blur standard deviation in output pixels
    solarize: torch.Tensor | None = None  # [n] bool: solarized

    def rows(self, index: torch.Tensor) -> ViewParams:
        """The choices of the images ``index`` names (a CPU index tensor into the drawn rows)."""
        return ViewParams(**{f.name: None if (v := getattr(self, f.name)) is None else v[index] for f in fields(self)})

    def __len__(self) -> int:
        return self.theta.shape[0]


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def _chosen(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) < p


def draw_crop(spec: AugmentSpec, n: int, gen: torch.Generator) -> torch.Tensor:
    """``[n, 2, 3]``: a random area fraction and aspect ratio per image, plus rotation and flip."""
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
    return torch.stack(
        [
            torch.stack([half_w * cos * flip, -half_h * sin, cx], dim=1),
            torch.stack([half_w * sin * flip, half_h * cos, cy], dim=1),
        ],
        dim=1,
    )


def draw_jitter(strength: float, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    on = (torch.rand(n, generator=gen) < 0.8).float()
    return on, torch.stack([_uniform(n, 1 - strength, 1 + strength, gen) for _ in range(3)], dim=1)


def draw_blur(p: float, sigma: tuple[float, float], n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    # sigma is drawn for every image, so the stream does not depend on which images are blurred
    return _chosen(n, p, gen), _uniform(n, *sigma, gen)


def draw_view(spec: AugmentSpec, n: int, channels: int, gen: torch.Generator) -> ViewParams:
    """Every random choice of one view of ``n`` images with ``channels`` channels, in the pipeline's order.

    Blur and solarize draw only when their probability is positive, so specs without them keep the stream they had
    before those steps existed; grayscale draws only for 3-channel images.
    """
    params = ViewParams(draw_crop(spec, n, gen))
    if spec.color_jitter > 0:
        params.jitter_on, params.jitter = draw_jitter(spec.color_jitter, n, gen)
    if spec.grayscale_p > 0 and channels == 3:
        params.gray = (torch.rand(n, generator=gen) < spec.grayscale_p).float()
    if spec.blur_p > 0:
        params.blur_on, params.sigma = draw_blur(spec.blur_p, spec.blur_sigma, n, gen)
    if spec.solarize_p > 0:
        params.solarize = _chosen(n, spec.solarize_p, gen)
    return params


def _per_image(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(device=like.device, dtype=like.dtype).view(-1, 1, 1, 1)


def apply_crop(images: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    theta = theta.to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def gray(images: torch.Tensor) -> torch.Tensor:
    if images.shape[1] == 1:
        return images
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def _rows_of(chosen: torch.Tensor) -> torch.Tensor:
    """CPU indices of the rows a 0/1 (or bool) mask marks: the row subset is chosen on the CPU, never synced."""
    return chosen.cpu().bool().nonzero().squeeze(1)


def _set_rows(images: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> None:
    if index.numel() == images.shape[0]:
        images.copy_(values)
    else:
        images[index.to(images.device)] = values


def _take(images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return images if index.numel() == images.shape[0] else images[index.to(images.device)]


def jitter_(images: torch.Tensor, on: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """``apply_jitter`` in place, computed only on the rows ``on`` marks, as one affine map per image.

    Brightness ``b``, contrast ``c`` about the mean gray level ``m`` of the brightened image, then saturation ``s``
    about each pixel's gray level: all three are linear and only the end is clamped, so they fold into
    ``x * (s b c) + gray(x) * ((1 - s) b c) + m (1 - c)`` with ``m = b * mean(gray(x))`` -- one pass over the
    colour channels instead of a dozen. Equal to the step-by-step form within a few 1e-7 (float rounding).
    """
    index = _rows_of(on)
    if index.numel() == 0:
        return images
    brightness, contrast, saturation = (_per_image(factors[index, i], images) for i in range(3))
    x = _take(images, index)
    grey = gray(x)
    # Mean of the row means, not one reduction over the image: on several threads torch splits a reduction with a
    # single output (a chunk holding one jittered image) across them and rounds differently than with many outputs,
    # which would let the chunking show in the views. Each of these two reductions keeps one order for any row count.
    mean = grey.mean(dim=3, keepdim=True).mean(dim=2, keepdim=True)
    shift = brightness * mean * (1 - contrast)
    grey = grey * ((1 - saturation) * brightness * contrast) + shift  # a new tensor: gray() may return x itself
    out = x.mul_(saturation * brightness * contrast).add_(grey).clamp_(0, 1)
    if out is not images:
        _set_rows(images, index, out)
    return images


def apply_jitter(images: torch.Tensor, on: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, then saturation, each scaled by its factor; images not ``on`` are left as they were."""
    return jitter_(images.clone(), on, factors)


def gray_(images: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """``apply_gray`` in place, on the chosen rows only."""
    index = _rows_of(chosen)
    if index.numel() and images.shape[1] > 1:
        _set_rows(images, index, gray(_take(images, index)).expand(-1, images.shape[1], -1, -1))
    return images


def apply_gray(images: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    return gray_(images.clone(), chosen)


def blur_matrices(kernels: torch.Tensor, size: int) -> torch.Tensor:
    """``[n, size, size]``: each image's 1-D kernel (``[n, 2r+1]``) as a matrix, reflecting at the borders.

    Built on the kernels' device one tap at a time: a tap lands on one column per row, so no two additions meet in
    one scatter (a single scatter of all taps is nondeterministic on a GPU) and the taps add up in the same order on
    every device.
    """
    n, width = kernels.shape
    radius = width // 2
    device = kernels.device
    source = (torch.arange(size, device=device).view(-1, 1) + torch.arange(-radius, radius + 1, device=device)).abs()
    source = torch.where(source > size - 1, 2 * (size - 1) - source, source)  # reflect below 0 and past the end
    matrices = torch.zeros(n, size, size, dtype=kernels.dtype, device=device)
    for tap in range(width):
        column = source[:, tap].view(1, size, 1).expand(n, size, 1)
        matrices.scatter_add_(2, column, kernels[:, tap].view(n, 1, 1).expand(n, size, 1))
    return matrices


def blur_(images: torch.Tensor, on: torch.Tensor, sigmas: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """``apply_blur`` in place."""
    chosen = _rows_of(on)
    if chosen.numel() == 0:
        return images
    _, _, height, width = images.shape
    # A kernel of +-3 sigma, at most what one reflection covers on this image.
    radius = max(1, min(math.ceil(3 * max_sigma), height - 1, width - 1))
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    sigma = sigmas[chosen].to(device=images.device, dtype=images.dtype).view(-1, 1)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    # Two batched matrix products (rows, then columns), each image with its own sigma: measured 1.2-2x faster on
    # CPU than a grouped convolution with one group per image and channel, and one kernel on a GPU. Re-measured on
    # 8-image chunks of 224 px (issue 14): 26 ms against 30-33 ms for a 13-tap separable conv or shift-and-add.
    rows = blur_matrices(kernel, height).unsqueeze(1)
    cols = blur_matrices(kernel, width).transpose(1, 2).unsqueeze(1)
    _set_rows(images, chosen, _banded_product(rows, _take(images, chosen), cols, radius))
    return images


BAND_BLOCK = 32  # output rows (columns) per block of the CPU's banded product


def _band(start: int, size: int, radius: int) -> tuple[int, int, int]:
    """A block's end and the source range [low, high) its outputs read."""
    stop = min(size, start + BAND_BLOCK)
    return stop, max(0, start - radius), min(size, stop + radius)


def _banded_product(rows: torch.Tensor, x: torch.Tensor, cols: torch.Tensor, radius: int) -> torch.Tensor:
    """``rows @ x @ cols`` for blur matrices, which are zero beyond ``radius`` of the diagonal (reflection included).

    On a CPU, in blocks of ``BAND_BLOCK`` output rows, each block multiplying only the ``BAND_BLOCK + 2 * radius``
    source rows it reads: at 224 px and radius 6 a fifth of the full product's multiply-adds. Elsewhere (a GPU, or
    images too small to gain) the full product, one kernel. Both add the same non-zero terms.
    """
    height, width = x.shape[-2:]
    if x.device.type != "cpu" or min(height, width) < 4 * BAND_BLOCK:
        return rows @ x @ cols
    left = torch.empty_like(x)
    for start in range(0, height, BAND_BLOCK):
        stop, low, high = _band(start, height, radius)
        torch.matmul(rows[..., start:stop, low:high], x[..., low:high, :], out=left[..., start:stop, :])
    out = torch.empty_like(x)
    for start in range(0, width, BAND_BLOCK):
        stop, low, high = _band(start, width, radius)
        torch.matmul(left[..., :, low:high], cols[..., low:high, start:stop], out=out[..., :, start:stop])
    return out


def apply_blur(images: torch.Tensor, on: torch.Tensor, sigmas: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Blur the images ``on`` (a CPU bool mask) marks, each with its own sigma; reflect-padded, separable."""
    return blur_(images.clone(), on, sigmas, max_sigma)


def solarize_(images: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """``apply_solarize`` in place, on the chosen rows only."""
    index = _rows_of(chosen)
    if index.numel():
        picked = _take(images, index)
        _set_rows(images, index, torch.where(picked >= 0.5, 1 - picked, picked))
    return images


def apply_solarize(images: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Invert the pixels at or above 0.5 (images in [0, 1]) of the chosen images."""
    return solarize_(images.clone(), chosen)


def apply_view(pixels: torch.Tensor, spec: AugmentSpec, params: ViewParams, size: int) -> torch.Tensor:
    """Float ``[n, C, H, W]`` in [0, 1] -> the view ``params`` (``n`` rows of them) describe, on the pixels' device."""
    if len(params) != pixels.shape[0]:
        raise ValueError(f"{len(params)} rows of view parameters for {pixels.shape[0]} images")
    x = apply_crop(pixels, params.theta, size)  # a fresh tensor: every later step may work in place
    if params.jitter is not None:
        jitter_(x, params.jitter_on, params.jitter)
    if params.gray is not None:
        gray_(x, params.gray)
    if params.blur_on is not None:
        blur_(x, params.blur_on, params.sigma, spec.blur_sigma[1])
    if params.solarize is not None:
        solarize_(x, params.solarize)
    return x
