"""VICReg (Bardes et al., 2022): invariance plus variance and covariance regularisers, no negatives."""

from typing import Any

from torch import nn

from method_zoo.forwards.common import embed, two_views
from method_zoo.requirements import require_attributes

METHOD = "vicreg_forward"


def vicreg_forward(self: nn.Module, batch: dict[str, Any], stage: str) -> dict[str, Any]:
    """Forward for VICReg, bound to an ``orchestra.Module``.

    Module attributes: ``backbone``, ``projector``, ``vicreg_loss`` (a :class:`VICRegLoss`).
    Batch: ``image``, ``sample_idx`` at train (two views per image), optional ``label``. Returns
    ``embedding``, ``label`` when given, and ``loss`` when ``stage == "train"``.
    """
    require_attributes(self, ("backbone", "projector", "vicreg_loss"), METHOD)
    out = embed(self, batch, METHOD, stage)
    if stage == "train":
        z_a, z_b = two_views(self.projector(out["embedding"]), batch, METHOD)
        out["loss"] = self.vicreg_loss(z_a, z_b)
    return out
