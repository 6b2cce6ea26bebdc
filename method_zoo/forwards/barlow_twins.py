"""Barlow Twins (Zbontar et al., 2021): make the views' cross-correlation matrix close to the identity."""

from typing import Any

from torch import nn

from method_zoo.forwards.common import embed, two_views
from method_zoo.requirements import require_attributes

METHOD = "barlow_twins_forward"


def barlow_twins_forward(self: nn.Module, batch: dict[str, Any], stage: str) -> dict[str, Any]:
    """Forward for Barlow Twins, bound to an ``orchestra.Module``.

    Module attributes: ``backbone``, ``projector``, ``barlow_loss`` (a :class:`BarlowTwinsLoss`).
    Batch: ``image``, ``sample_idx`` at train (two views per image), optional ``label``. Returns
    ``embedding``, ``label`` when given, and ``loss`` when ``stage == "train"``.
    """
    require_attributes(self, ("backbone", "projector", "barlow_loss"), METHOD)
    out = embed(self, batch, METHOD, stage)
    if stage == "train":
        z_a, z_b = two_views(self.projector(out["embedding"]), batch, METHOD)
        out["loss"] = self.barlow_loss(z_a, z_b)
    return out
