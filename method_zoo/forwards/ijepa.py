"""I-JEPA (Assran et al., CVPR 2023): from one large context block of an image, a narrow predictor predicts the EMA
target encoder's features of several target blocks, in representation space (no pixels, no augmentations)."""

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from method_zoo.block_masking import BlockIndices, batch_indices, block_masks, min_counts
from method_zoo.distributed import is_distributed
from method_zoo.errors import MethodError
from method_zoo.forwards.common import base_outputs, images, training_progress
from method_zoo.losses.ijepa import IJEPALoss
from method_zoo.parts.ijepa import gather_rows
from method_zoo.requirements import require_attributes, require_batch_keys
from method_zoo.teacher_student import TeacherStudentWrapper
from method_zoo.views import split_views

METHOD = "ijepa_forward"
_DEFAULT_LOSS = IJEPALoss()
_VIT_INTERFACE = ("tokens", "grid", "positional_embedding")


def _hparams(module: nn.Module) -> Mapping[str, Any]:
    hparams = getattr(module, "hparams", None)
    return hparams if isinstance(hparams, Mapping) else {}


def _indices(module: nn.Module, sample_idx: torch.Tensor, grid: tuple[int, int]) -> BlockIndices:
    """Every image's blocks from (mask_seed, epoch, image), cut to the fewest patches over the *global* batch, so
    a DDP rank keeps exactly its rows of what one process on the whole batch would keep."""
    hp = _hparams(module)
    masks = block_masks(sample_idx, grid, int(hp.get("mask_seed", 0)), training_progress(module)[0],
                        num_targets=int(hp.get("num_targets", 4)),
                        target_scale=tuple(hp.get("target_scale", (0.15, 0.2))),
                        target_aspect=tuple(hp.get("target_aspect", (0.75, 1.5))),
                        context_scale=tuple(hp.get("context_scale", (0.85, 1.0))),
                        min_context=int(hp.get("min_context", 1)))
    counts = min_counts(masks)
    if is_distributed():
        dist.all_reduce(counts, op=dist.ReduceOp.MIN)
    return batch_indices(masks, counts)


def ijepa_forward(self: nn.Module, batch: dict[str, Any], stage: str) -> dict[str, Any]:
    """Forward for I-JEPA, bound to an ``orchestra.Module``.

    Module attributes: ``backbone``, a :class:`TeacherStudentWrapper` over a ViT (``tokens(x, keep)``, ``grid``,
    ``positional_embedding``; the Module steps its EMA); ``predictor``
    (:class:`~method_zoo.parts.ijepa.IJEPAPredictor`); optional ``ijepa_loss`` (default L2). Masks come from
    ``hparams`` (mask_seed, num_targets, target_scale, target_aspect, context_scale, min_context) and the epoch.

    Batch: ``image`` (one view), ``sample_idx`` at train, optional ``label``. Returns ``label`` when given,
    ``embedding`` (val/test: the online ViT's CLS on the whole image; train: the context encoding's CLS) and at
    train ``loss``.
    """
    require_attributes(self, ("backbone", "predictor"), METHOD)
    if not isinstance(self.backbone, TeacherStudentWrapper) or not all(
            hasattr(self.backbone.student, name) for name in _VIT_INTERFACE):
        raise MethodError(f"{METHOD} needs a ViT backbone in a TeacherStudentWrapper (backbone=vit_tiny)")
    x = images(batch, METHOD, stage)
    if stage != "train":
        return base_outputs(self.backbone(x), batch)
    require_batch_keys(batch, ("sample_idx",), METHOD, stage)
    split_views(x, batch["sample_idx"], n_views=1, method=METHOD)  # one row per image, or one line
    vit, target_vit = self.backbone.student, self.backbone.teacher
    grid = tuple(vit.grid(x))
    context_idx, target_idx = (i.to(x.device) for i in _indices(self, batch["sample_idx"], grid))
    b, m, kt = target_idx.shape
    with torch.no_grad():  # targets: the EMA encoder on the FULL image, layer-normed per patch, then gathered
        full = target_vit.tokens(x)[:, 1:]
        full = F.layer_norm(full, full.shape[-1:])
        target = gather_rows(full, target_idx.reshape(b, m * kt)).reshape(b, m, kt, -1)
    context = vit.tokens(x, context_idx)  # [B, 1 + Kc, D]: the context patches only
    # Positions are a fixed input to the predictor (the paper's are fixed sin-cos): detached, so the prediction
    # loss does not move the encoder's positional embeddings through the predictor's queries.
    positions = vit.positional_embedding(grid).detach()
    pred = self.predictor(context[:, 1:], context_idx, target_idx, positions)
    loss_fn = getattr(self, "ijepa_loss", None) or _DEFAULT_LOSS
    out = base_outputs(context[:, 0], batch)
    out["loss"] = loss_fn(pred, target)
    return out
