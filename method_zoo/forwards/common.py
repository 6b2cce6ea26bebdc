"""Pieces every forward shares: the embedding/label outputs, the two-view split and the multi-crop split at train time.

Training batches carry the global views in ``image`` (``[G*N, C, H, W]``, view-major) and, when ``data.local_views``
L > 0, the local crops in ``local_image`` (``[L*N, C, h, w]``, view-major) with ``local_sample_idx``. README's
"Batch contract" section is the user-facing statement of this.
"""

import math
from typing import Any, NamedTuple

from torch import Tensor, nn

from method_zoo.errors import MethodError
from method_zoo.requirements import require_batch_keys
from method_zoo.views import split_views


class Crops(NamedTuple):
    """A multi-crop training batch: one backbone call per resolution group."""

    global_images: Tensor  # [G*N, C, H, W]
    global_sample_idx: Tensor  # [G*N]
    local_images: Tensor  # [L*N, C, h, w]
    local_sample_idx: Tensor  # [L*N]


def base_outputs(embedding: Tensor, batch: dict[str, Any]) -> dict[str, Any]:
    """The keys callbacks rely on at every stage: ``embedding`` and, when the data has one, ``label``."""
    out: dict[str, Any] = {"embedding": embedding}
    if "label" in batch:
        out["label"] = batch["label"]
    return out


def images(batch: dict[str, Any], method: str, stage: str) -> Tensor:
    """``batch['image']`` with a MethodError instead of a KeyError when it is missing."""
    require_batch_keys(batch, ("image",), method, stage)
    return batch["image"]


def _local_views_per_image(batch: dict[str, Any], n_global: int) -> int:
    images_in_batch = max(1, batch["sample_idx"].shape[0] // n_global) if "sample_idx" in batch else 1
    return batch["local_image"].shape[0] // images_in_batch


def two_views(x: Tensor, batch: dict[str, Any], method: str) -> tuple[Tensor, Tensor]:
    """Split per-row outputs ``x`` into the two views of each image (train batches only).

    A batch with local crops is refused rather than silently trained on its global views only: the user asked for
    crops (and pays for them in the loader) that this method would never look at.
    """
    if "local_image" in batch:
        local = _local_views_per_image(batch, 2)
        raise MethodError(
            f"{method} uses two views; data.local_views={local} adds local crops it would ignore; "
            "set data.local_views=0"
        )
    require_batch_keys(batch, ("sample_idx",), method, "train")
    view_a, view_b = split_views(x, batch["sample_idx"], n_views=2, method=method)
    return view_a, view_b


def multi_crop_views(batch: dict[str, Any], method: str) -> Crops:
    """The global and local crops of a training batch, or one line saying how to get local crops."""
    require_batch_keys(batch, ("image", "sample_idx"), method, "train")
    if "local_image" not in batch:
        raise MethodError(f"{method} needs local crops: set data.local_views=6 (and data.local_size)")
    require_batch_keys(batch, ("local_sample_idx",), method, "train")
    return Crops(batch["image"], batch["sample_idx"], batch["local_image"], batch["local_sample_idx"])


def split_crops(
    global_out: Tensor, local_out: Tensor, batch: dict[str, Any], n_global: int, method: str
) -> tuple[list[Tensor], list[Tensor]]:
    """Regroup per-row outputs of both resolution groups into ``n_global`` + L tensors ``[N, ...]``.

    Row i of every returned tensor describes the same image. L is read from the batch (``local_image`` rows / N),
    so a forward needs to know only how many global views it expects.
    """
    crops = multi_crop_views(batch, method)
    globals_ = split_views(global_out, crops.global_sample_idx, n_global, method)
    n_images = globals_[0].shape[0]
    local_rows = crops.local_sample_idx.shape[0]
    if local_rows == 0 or local_rows % n_images:
        raise MethodError(
            f"{method}: batch['local_image'] has {local_rows} rows, not a positive multiple of the {n_images} "
            "images in batch['image']; set data.local_views to a positive integer"
        )
    n_local = local_rows // n_images
    locals_ = split_views(local_out, crops.local_sample_idx, n_local, method)
    if crops.global_sample_idx.device.type == "cpu":
        # split_views keeps batch order for the loaders' layout and sorts by image otherwise; both groups must have
        # taken the same way, or row i would pair different images. On an accelerator both sort (no host wait).
        first_global = split_views(crops.global_sample_idx, crops.global_sample_idx, n_global, method)[0]
        first_local = split_views(crops.local_sample_idx, crops.local_sample_idx, n_local, method)[0]
        if not first_global.equal(first_local.to(first_global.device)):
            raise MethodError(
                f"{method}: batch['local_sample_idx'] does not name the images of batch['sample_idx'] in the same "
                "order; both groups must be view-major over the same images"
            )
    return globals_, locals_


def embed(module: nn.Module, batch: dict[str, Any], method: str, stage: str) -> dict[str, Any]:
    """Run ``module.backbone`` on the images and start the output dict."""
    return base_outputs(module.backbone(images(batch, method, stage)), batch)


def attached_trainer(module: nn.Module) -> Any:
    try:
        return getattr(module, "trainer", None)
    except RuntimeError:  # a LightningModule not attached to a Trainer raises instead of returning None
        return None


def training_progress(module: nn.Module) -> tuple[int, float]:
    """``(epoch, fractional epoch)`` from the module's trainer: ``global_step / optimizer steps per epoch``.

    Read from the trainer rather than counted here, so a run resumed mid-epoch continues the schedules exactly where
    they stopped. Without a trainer (a bare module) training is taken to be at its start.
    """
    trainer = attached_trainer(module)
    if trainer is None:
        return 0, 0.0
    epoch = int(trainer.current_epoch)
    batches = float(trainer.num_training_batches)
    if not math.isfinite(batches) or batches < 1:
        return epoch, float(epoch)
    steps_per_epoch = math.ceil(batches / max(1, int(trainer.accumulate_grad_batches)))
    return epoch, int(trainer.global_step) / steps_per_epoch
