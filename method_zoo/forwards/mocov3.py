"""MoCo v3: symmetric in-batch contrast of predicted queries with momentum-encoder keys, no queue.

Chen, Xie, He, "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV 2021.
"""

from typing import Any

from torch import nn

from method_zoo.forwards.common import embed
from method_zoo.parts.moco import encode_views, momentum_keys, require_momentum_encoder, split_images, train_outputs
from method_zoo.requirements import require_attributes

METHOD = "mocov3_forward"


def mocov3_forward(self: nn.Module, batch: dict[str, Any], stage: str) -> dict[str, Any]:
    """Forward for MoCo v3, bound to an ``orchestra.Module``.

    Module attributes: ``backbone`` and ``projector`` (both :class:`TeacherStudentWrapper`; their teachers are the
    momentum encoder, EMA on a cosine schedule 0.99 -> 1 over the optimizer steps), ``predictor`` and
    ``mocov3_loss`` (an :class:`InfoNCELoss` with ``scale_by_temperature=True``; temperature 0.2 by default here,
    the paper's ResNet-50 value is 1.0, its ViT value 0.2).

    At train each view's query ``predictor(projector(backbone(x)))`` is contrasted with the momentum keys of the other
    view for the whole global batch (gathered across ranks, no gradient); ``loss = ctr(q_a, k_b) + ctr(q_b, k_a)``,
    each term scaled by ``2 * temperature``, as in the paper. Returns ``embedding`` (the base encoder's, which the
    paper evaluates), ``label`` when given, and ``loss`` at train.
    """
    require_attributes(self, ("backbone", "projector", "predictor", "mocov3_loss"), METHOD)
    require_momentum_encoder(self, ("backbone", "projector"), METHOD)
    if stage != "train":
        return embed(self, batch, METHOD, stage)
    x_a, x_b = split_images(batch, METHOD)
    e_a, e_b = encode_views(self.backbone, x_a, x_b)
    out = train_outputs(e_a, e_b, batch, METHOD)
    q_a, q_b = encode_views(lambda e: self.predictor(self.projector(e)), e_a, e_b)
    k_a, k_b = encode_views(lambda x: momentum_keys(self, x), x_a, x_b)
    out["loss"] = self.mocov3_loss(q_a, k_b) + self.mocov3_loss(q_b, k_a)
    return out
