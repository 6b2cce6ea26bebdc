"""BYOL (Grill et al., 2020): an online network predicts an EMA teacher's projection of the other view."""

from typing import Any

from torch import nn

from method_zoo.errors import MethodError
from method_zoo.forwards.common import base_outputs, images, two_views
from method_zoo.losses.byol import BYOLLoss
from method_zoo.requirements import require_attributes
from method_zoo.teacher_student import TeacherStudentWrapper

METHOD = "byol_forward"
_DEFAULT_LOSS = BYOLLoss()


def _require_wrapped(module: nn.Module, names: tuple[str, ...]) -> None:
    for name in names:
        if not isinstance(getattr(module, name), TeacherStudentWrapper):
            raise MethodError(
                f"{METHOD} needs Module attribute '{name}' to be a TeacherStudentWrapper "
                f"(pass {name}=method_zoo.TeacherStudentWrapper(<network>) to orchestra.Module)"
            )


def byol_forward(self: nn.Module, batch: dict[str, Any], stage: str) -> dict[str, Any]:
    """Forward for BYOL, bound to an ``orchestra.Module``.

    Module attributes: ``backbone`` and ``projector`` (both :class:`TeacherStudentWrapper`), ``predictor``,
    optional ``byol_loss`` (default :class:`BYOLLoss`). The Module must call ``update_teacher`` on both
    wrappers once per optimizer step.

    Returns ``embedding`` from the *teacher* backbone (the EMA network is the one BYOL evaluates),
    ``label`` when given, and at train ``loss = byol_loss(p_a, t_b) + byol_loss(p_b, t_a)``: the sum of
    the two symmetric terms, as in the paper, so its scale is in [0, 8] and the paper's learning rates
    apply unchanged.
    """
    require_attributes(self, ("backbone", "projector", "predictor"), METHOD)
    _require_wrapped(self, ("backbone", "projector"))
    x = images(batch, METHOD, stage)
    out = base_outputs(self.backbone.forward_teacher(x), batch)
    if stage == "train":
        online = self.predictor(self.projector(self.backbone(x)))
        target = self.projector.forward_teacher(out["embedding"])
        p_a, p_b = two_views(online, batch, METHOD)
        t_a, t_b = two_views(target, batch, METHOD)
        loss_fn = getattr(self, "byol_loss", None)
        if loss_fn is None:
            loss_fn = _DEFAULT_LOSS
        out["loss"] = loss_fn(p_a, t_b.detach()) + loss_fn(p_b, t_a.detach())
    return out
