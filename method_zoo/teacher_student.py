"""A student network plus its exponential-moving-average teacher (BYOL's target network)."""

import copy
import math

import torch
from torch import nn

from method_zoo.errors import MethodError


class TeacherStudentWrapper(nn.Module):
    """Holds a trainable ``student`` and a ``teacher`` copy updated only by EMA of the student's weights.

    The EMA coefficient follows a cosine schedule over *optimizer steps* from ``base_ema`` to
    ``final_ema``. The caller invokes :meth:`update_teacher` once per optimizer step, so gradient
    accumulation (several forwards per step) does not speed up the schedule.

    Mode choice: the teacher is an ordinary submodule, so it follows the wrapper's train/eval mode. In
    training, normalisation layers in the teacher therefore use batch statistics, as in BYOL's reference
    implementation; the teacher never builds a graph because it only runs under ``torch.no_grad`` and its
    parameters have ``requires_grad=False``. Its buffers (BN running statistics) are its own, updated by its own
    train-mode forwards: the student's statistics describe the student's activations, and a slowly moving teacher
    normalised with them gives near-chance features in eval mode (seen: BYOL probe top-1 0.11 on MNIST).
    """

    def __init__(self, student: nn.Module, base_ema: float = 0.996, final_ema: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= base_ema <= 1.0 or not 0.0 <= final_ema <= 1.0:
            raise MethodError(
                f"TeacherStudentWrapper needs 0 <= base_ema, final_ema <= 1 (got {base_ema}, {final_ema})"
            )
        self.student = student
        self.teacher = copy.deepcopy(student)
        self.teacher.requires_grad_(False)
        self.base_ema = base_ema
        self.final_ema = final_ema
        self.current_ema = base_ema
        # The EMA's own float32 copy of a teacher held in bf16/fp16 (DeepSpeed's bf16 casts every parameter). Not
        # checkpointed: after a resume it restarts from the low-precision teacher, one rounding rather than a drift.
        self._float32_teacher: list[torch.Tensor] | None = None
        self._teacher_versions: list[int] = []  # the teacher's tensor versions when the copy last wrote them

    def forward(self, *args: object, **kwargs: object) -> object:
        """Run the student (trainable path)."""
        return self.student(*args, **kwargs)

    @torch.no_grad()
    def forward_teacher(self, *args: object, **kwargs: object) -> object:
        """Run the teacher without building a graph."""
        return self.teacher(*args, **kwargs)

    def ema_at(self, step: int, total_steps: int) -> float:
        """EMA coefficient after ``step`` of ``total_steps`` optimizer steps (clamped to the schedule)."""
        if total_steps <= 0:
            raise MethodError(
                f"TeacherStudentWrapper needs total_steps > 0 for its EMA schedule (got {total_steps})"
            )
        progress = min(max(step / total_steps, 0.0), 1.0)
        return self.final_ema - (self.final_ema - self.base_ema) * (math.cos(math.pi * progress) + 1) / 2

    @torch.no_grad()
    def update_teacher(self, step: int, total_steps: int) -> None:
        """teacher <- tau * teacher + (1 - tau) * student, with tau from the schedule; buffers stay the teacher's."""
        tau = self.ema_at(step, total_steps)
        self.current_ema = tau
        teacher_params = list(self.teacher.parameters())
        if not teacher_params:
            return
        student_params = [p.detach() for p in self.student.parameters()]
        averages = self._ema_tensors(teacher_params)
        if averages is not teacher_params:
            student_params = [p.float() for p in student_params]
        torch._foreach_mul_(averages, tau)
        torch._foreach_add_(averages, student_params, alpha=1.0 - tau)
        if averages is not teacher_params:
            torch._foreach_copy_(teacher_params, averages)
            self._teacher_versions = [p._version for p in teacher_params]

    def _ema_tensors(self, teacher_params: list[torch.Tensor]) -> list[torch.Tensor]:
        """Where the average accumulates: the teacher itself, or a float32 copy when the teacher is bf16/fp16.

        In bf16 (8 significant bits) the per-step change of an EMA at tau=0.996 is about one rounding step of the
        weight, so an in-place bf16 average mostly rounds the update away and the teacher stalls or wanders.
        """
        if all(p.dtype in (torch.float32, torch.float64) for p in teacher_params):
            self._float32_teacher = None
            return teacher_params
        copies = self._float32_teacher
        # Anything else that wrote the teacher since (load_state_dict, a move to another device) makes the copy stale.
        stale = (copies is None or [p._version for p in teacher_params] != self._teacher_versions
                 or any(c.shape != p.shape or c.device != p.device
                        for c, p in zip(copies, teacher_params, strict=True)))
        if stale:
            self._float32_teacher = copies = [p.float() for p in teacher_params]
        return copies

    def extra_repr(self) -> str:
        return f"base_ema={self.base_ema}, final_ema={self.final_ema}"
