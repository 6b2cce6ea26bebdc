"""SimCLR (Chen et al., 2020): contrast two augmented views of each image against the rest of the batch."""

from typing import Any

from torch import nn

from method_zoo.forwards.common import embed, two_views
from method_zoo.requirements import require_attributes

METHOD = "simclr_forward"


def simclr_forward(self: nn.Module, batch: dict[str, Any], stage: str) -> dict[str, Any]:
    """Forward for SimCLR, bound to an ``orchestra.Module``.

    Module attributes: ``backbone``, ``projector``, ``simclr_loss`` (an :class:`NTXEntLoss`).
    Batch: ``image`` (``[N * 2, ...]`` at train, ``[N, ...]`` otherwise), ``sample_idx`` at train,
    optional ``label``. Returns ``embedding`` (backbone features, one row per input row), ``label`` when
    given, and ``loss`` when ``stage == "train"``.
    """
    require_attributes(self, ("backbone", "projector", "simclr_loss"), METHOD)
    out = embed(self, batch, METHOD, stage)
    if stage == "train":
        z_a, z_b = two_views(self.projector(out["embedding"]), batch, METHOD)
        out["loss"] = self.simclr_loss(z_a, z_b)
    return out
