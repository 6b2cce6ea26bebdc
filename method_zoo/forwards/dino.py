"""DINO (Caron et al., ICCV 2021): a student matches its EMA teacher's centred, sharpened output across crops."""

from typing import Any

import torch
from torch import nn

from method_zoo.errors import MethodError
from method_zoo.forwards.common import (
    attached_trainer,
    base_outputs,
    images,
    multi_crop_views,
    split_crops,
    training_progress,
)
from method_zoo.requirements import require_attributes
from method_zoo.teacher_student import TeacherStudentWrapper
from method_zoo.views import split_views

METHOD = "dino_forward"


def _require_wrapped(module: nn.Module, names: tuple[str, ...]) -> None:
    for name in names:
        if not isinstance(getattr(module, name), TeacherStudentWrapper):
            raise MethodError(f"{METHOD} needs Module attribute '{name}' to be a TeacherStudentWrapper "
                              f"(pass {name}=method_zoo.TeacherStudentWrapper(<network>) to orchestra.Module)")


def _record(module: nn.Module, name: str, value: float, batch_size: int) -> None:
    """Log a schedule's value on the steps the loggers write (every self.log costs host time)."""
    trainer = attached_trainer(module)
    if trainer is None or not callable(getattr(module, "log", None)):
        return
    if (int(trainer.global_step) + 1) % max(1, int(trainer.log_every_n_steps or 1)) == 0:
        module.log(name, value, batch_size=batch_size)


def dino_forward(self: nn.Module, batch: dict[str, Any], stage: str) -> dict[str, Any]:
    """Forward for DINO, bound to an ``orchestra.Module``.

    Module attributes: ``backbone`` and ``projector`` (a :class:`~method_zoo.parts.dino.DINOHead`), both
    :class:`TeacherStudentWrapper` (the Module updates the teachers after each optimizer step), and ``dino_loss``
    (:class:`~method_zoo.losses.dino.DINOLoss`, which holds the centre and the temperature schedule).
    Train batch: G global views in ``image``/``sample_idx`` and L local crops in ``local_image``/``local_sample_idx``.

    Returns ``embedding`` from the teacher backbone (the network DINO evaluates), ``label`` when given, and at train
    ``loss`` plus ``teacher_temp``, the teacher temperature of this step (also logged as ``dino/teacher_temp``).
    """
    require_attributes(self, ("backbone", "projector", "dino_loss"), METHOD)
    _require_wrapped(self, ("backbone", "projector"))
    if stage != "train":
        return base_outputs(self.backbone.forward_teacher(images(batch, METHOD, stage)), batch)
    crops = multi_crop_views(batch, METHOD)
    out = base_outputs(self.backbone.forward_teacher(crops.global_images), batch)  # the teacher sees globals only
    epoch, epochs_done = training_progress(self)
    # One backbone call per resolution; the head is shared, so both groups go through it in one call.
    features = torch.cat([self.backbone(crops.global_images), self.backbone(crops.local_images)])
    student = self.projector(features, epoch=epoch)
    n_rows = crops.global_images.shape[0]
    n_global = n_rows // max(1, crops.global_sample_idx.unique().numel())
    globals_, locals_ = split_crops(student[:n_rows], student[n_rows:], batch, n_global, METHOD)
    teacher = split_views(self.projector.forward_teacher(out["embedding"]), crops.global_sample_idx, n_global, METHOD)
    temp = self.dino_loss.teacher_temp_at(epochs_done)
    out["loss"] = self.dino_loss([*globals_, *locals_], teacher, temp)
    self.dino_loss.update_center(teacher)  # after the loss: this step's targets used the centre of earlier steps
    out["teacher_temp"] = temp
    _record(self, "dino/teacher_temp", temp, n_rows // n_global)
    return out
