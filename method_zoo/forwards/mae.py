"""MAE (He et al., CVPR 2022): a ViT encodes a random 25 % of each image's patches; a light decoder reconstructs the
pixels of the other 75 %."""

from collections.abc import Mapping
from typing import Any

from torch import nn

from method_zoo.errors import MethodError
from method_zoo.forwards.common import base_outputs, images, training_progress
from method_zoo.losses.mae import MAELoss
from method_zoo.masking import random_masking
from method_zoo.requirements import require_attributes, require_batch_keys
from method_zoo.views import split_views

METHOD = "mae_forward"
_DEFAULT_LOSS = MAELoss()
_VIT_INTERFACE = ("tokens", "grid", "patch_size")


def _hparam(module: nn.Module, name: str, default: Any) -> Any:
    hparams = getattr(module, "hparams", None)
    return hparams.get(name, default) if isinstance(hparams, Mapping) else default


def mae_forward(self: nn.Module, batch: dict[str, Any], stage: str) -> dict[str, Any]:
    """Forward for MAE, bound to an ``orchestra.Module``.

    Module attributes: ``backbone``, a ViT with ``tokens(x, keep)``, ``grid(x)`` and ``patch_size`` (e.g.
    ``backbone=vit_tiny``); ``decoder`` (:class:`~method_zoo.parts.mae.MAEDecoder`); optional ``mae_loss`` (default
    ``MAELoss(norm_pix=True)``). ``hparams.mask_ratio`` (0.75) and ``hparams.mask_seed`` (0) with the trainer's
    epoch fix every image's mask (:func:`~method_zoo.masking.random_masking`), so DDP ranks and resumed runs draw
    the masks one uninterrupted process would.

    Batch: ``image`` (one view per image at train), ``sample_idx`` at train, optional ``label``. Returns ``label``
    when given, ``embedding`` (at val/test the backbone's CLS on the whole image; at train the CLS of the encoding
    of the visible patches, so training pays for no extra full-image pass) and at train ``loss`` and ``mask``.
    """
    require_attributes(self, ("backbone", "decoder"), METHOD)
    backbone = self.backbone
    if not all(hasattr(backbone, name) for name in _VIT_INTERFACE):
        raise MethodError(f"{METHOD} needs a ViT backbone (backbone=vit_tiny); {type(backbone).__name__} has no "
                          "patch tokens")
    x = images(batch, METHOD, stage)
    if stage != "train":
        return base_outputs(backbone(x), batch)
    if "local_image" in batch:
        raise MethodError(f"{METHOD} uses one view and no local crops; set data.local_views=0")
    require_batch_keys(batch, ("sample_idx",), METHOD, stage)
    split_views(x, batch["sample_idx"], n_views=1, method=METHOD)  # one row per image, or one line
    if self.decoder.patch_size != backbone.patch_size:
        raise MethodError(f"{METHOD}: decoder patch_size {self.decoder.patch_size} != backbone patch_size "
                          f"{backbone.patch_size}")
    grid = tuple(backbone.grid(x))
    epoch, _ = training_progress(self)
    keep, mask = random_masking(batch["sample_idx"], grid[0] * grid[1], float(_hparam(self, "mask_ratio", 0.75)),
                                int(_hparam(self, "mask_seed", 0)), epoch)
    keep, mask = keep.to(x.device), mask.to(x.device)
    tokens = backbone.tokens(x, keep)  # [B, 1 + K, D]: only the visible patches are encoded
    pred = self.decoder(tokens, keep, grid)
    loss_fn = getattr(self, "mae_loss", None)
    if loss_fn is None:
        loss_fn = _DEFAULT_LOSS
    out = base_outputs(tokens[:, 0], batch)
    out.update(loss=loss_fn(pred, x, mask, backbone.patch_size), mask=mask)
    return out
