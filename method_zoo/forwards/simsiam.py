"""SimSiam (Chen & He, CVPR 2021): a predictor regresses the stop-gradient projection of the other view."""

from typing import Any

from torch import nn

from method_zoo.forwards.common import embed, two_views
from method_zoo.losses.simsiam import SimSiamLoss
from method_zoo.requirements import require_attributes

METHOD = "simsiam_forward"
_DEFAULT_LOSS = SimSiamLoss()


def simsiam_forward(self: nn.Module, batch: dict[str, Any], stage: str) -> dict[str, Any]:
    """Forward for SimSiam, bound to an ``orchestra.Module``.

    Module attributes: ``backbone``, ``projector`` (``method_zoo.parts.simsiam.simsiam_projector``), ``predictor``
    (``simsiam_predictor``), optional ``simsiam_loss`` (default :class:`SimSiamLoss`). No EMA teacher and no
    negatives: the stop-gradient inside the loss is what prevents collapse. The paper keeps the predictor's
    learning rate fixed while the rest decays; in orchestra that is the optimizer option
    ``optim.param_groups: [{params: predictor, fixed_lr: true}]`` (conf/method/simsiam.yaml sets it).

    Batch: ``image`` (``[N * 2, ...]`` at train), ``sample_idx`` at train, optional ``label``. Returns
    ``embedding``, ``label`` when given, and at train ``projection`` (the projector output, one row per input
    row) and ``loss = D(p_a, z_b) / 2 + D(p_b, z_a) / 2`` in [-1, 1].
    """
    require_attributes(self, ("backbone", "projector", "predictor"), METHOD)
    out = embed(self, batch, METHOD, stage)
    if stage == "train":
        # Both views go through the heads in one call, like the backbone, so BatchNorm's statistics span the
        # two-view batch (the authors' release calls the network once per view).
        z = self.projector(out["embedding"])
        z_a, z_b = two_views(z, batch, METHOD)
        p_a, p_b = two_views(self.predictor(z), batch, METHOD)
        loss_fn = getattr(self, "simsiam_loss", None)
        if loss_fn is None:
            loss_fn = _DEFAULT_LOSS
        out["projection"] = z
        out["loss"] = loss_fn(p_a, p_b, z_a, z_b)
    return out
