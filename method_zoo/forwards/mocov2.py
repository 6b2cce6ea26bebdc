"""MoCo v2: contrast a query with its momentum-encoder key and a FIFO queue of past keys.

He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020 (MoCo);
Chen, Fan, Girshick, He, "Improved Baselines with Momentum Contrastive Learning", arXiv:2003.04297, 2020 (v2: the
MLP head, temperature 0.2, blur in the augmentation).
"""

from typing import Any

import torch.nn.functional as F
from torch import nn

from method_zoo.distributed import world_size
from method_zoo.errors import MethodError
from method_zoo.forwards.common import embed
from method_zoo.parts.moco import encode_views, momentum_keys, require_momentum_encoder, split_images, train_outputs
from method_zoo.queue import FeatureQueue
from method_zoo.requirements import require_attributes

METHOD = "mocov2_forward"
QUEUE_SETTING = "module.hparams.queue_size"


def check_queue(queue: FeatureQueue, keys_per_step: int) -> None:
    """A queue shorter than one step's keys would drop keys of the very batch it just saw: refuse it."""
    length = int(queue.data.shape[0])
    if length < keys_per_step:
        raise MethodError(f"{METHOD}: the key queue holds {length} keys but every step enqueues {keys_per_step} "
                          f"(the global batch); set {QUEUE_SETTING} to at least {keys_per_step} (the paper: 65536)")


def mocov2_forward(self: nn.Module, batch: dict[str, Any], stage: str) -> dict[str, Any]:
    """Forward for MoCo v2, bound to an ``orchestra.Module``.

    Module attributes: ``backbone`` and ``projector`` (both :class:`TeacherStudentWrapper`: their teachers are the
    key encoder, EMA momentum 0.999, updated by the Module after each optimizer step), ``queue`` (a
    :class:`FeatureQueue` of ``[queue_size, projection_dim]``, a submodule, so checkpoints carry it), ``mocov2_loss``
    (an :class:`InfoNCELoss`, temperature 0.2) and optional ``symmetric`` (default False, as in the paper).

    At train the query is view a's projection and its key view b's momentum projection; the negatives are the queue
    as it stood before this step. ``symmetric=True`` (solo-learn's "v2+") averages that with the swapped pair. The
    global batch's view-b keys (gathered across ranks) are enqueued after the loss, oldest overwritten first.
    Returns ``embedding`` (the query encoder's, the one MoCo evaluates), ``label`` when given, and ``loss`` at train.
    """
    require_attributes(self, ("backbone", "projector", "queue", "mocov2_loss"), METHOD)
    require_momentum_encoder(self, ("backbone", "projector"), METHOD)
    if stage != "train":
        return embed(self, batch, METHOD, stage)
    x_a, x_b = split_images(batch, METHOD)
    e_a, e_b = encode_views(self.backbone, x_a, x_b)
    out = train_outputs(e_a, e_b, batch, METHOD)
    k_b = F.normalize(momentum_keys(self, x_b), dim=1)
    check_queue(self.queue, k_b.shape[0] * world_size())
    # A copy: the push below rewrites the buffer in place, which the backward pass must not see.
    negatives = self.queue.contents().clone()
    loss = self.mocov2_loss(self.projector(e_a), k_b, negatives)
    if getattr(self, "symmetric", False):
        k_a = F.normalize(momentum_keys(self, x_a), dim=1)
        loss = (loss + self.mocov2_loss(self.projector(e_b), k_a, negatives)) / 2
    self.queue.push(k_b)
    out["loss"] = loss
    return out
