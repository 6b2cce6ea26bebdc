"""DINO self-distillation loss with a centred, sharpened teacher (Caron et al., ICCV 2021)."""

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from method_zoo import distributed
from method_zoo.errors import MethodError


def _wide(x: Tensor) -> Tensor:
    """At least float32: softmax over many prototypes in bf16 loses the small probabilities; float64 stays."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class DINOLoss(nn.Module):
    """Cross-entropy ``H(P_t(g_i), P_s(v_j))`` averaged over every (teacher global view i, student view j != i) pair.

    ``P_t = softmax((t - center) / teacher_temp)``: subtracting the centre keeps one prototype from dominating,
    the low temperature sharpens; together they are what keeps the teacher from collapsing. ``P_s =
    softmax(s / student_temp)``. The centre is a buffer (checkpointed with the Module) updated by :meth:`update_center`
    with the EMA of the teacher's mean output over the *global* batch, so every rank holds the same centre and two
    ranks compute what one process computes on the whole batch.

    The loss itself needs no gather: every term is a mean over rows, each rank averages its own rows, and DDP's
    gradient mean over equally sized ranks is then the single-process gradient.
    """

    center: Tensor

    def __init__(
        self,
        out_dim: int,
        student_temp: float = 0.1,
        teacher_temp: float = 0.07,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: float = 30,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        if min(student_temp, teacher_temp, warmup_teacher_temp) <= 0:
            raise MethodError("DINOLoss temperatures must be > 0 "
                              f"(got student {student_temp}, teacher {warmup_teacher_temp} -> {teacher_temp})")
        if not 0.0 <= center_momentum <= 1.0 or warmup_teacher_temp_epochs < 0:
            raise MethodError("DINOLoss needs 0 <= center_momentum <= 1 and warmup_teacher_temp_epochs >= 0 "
                              f"(got {center_momentum}, {warmup_teacher_temp_epochs})")
        self.student_temp = student_temp
        self.teacher_temp = teacher_temp
        self.warmup_teacher_temp = warmup_teacher_temp
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs
        self.center_momentum = center_momentum
        # Float32 whatever the teacher's precision: a 0.9 EMA of bf16 means would round away most updates.
        self.register_buffer("center", torch.zeros(out_dim))

    def teacher_temp_at(self, epoch: float) -> float:
        """Teacher temperature after ``epoch`` (fractional) epochs: linear warm-up, then constant.

        Fractional, so that the value moves every step and a resume mid-epoch lands on the same value; the paper's
        per-epoch table is this schedule sampled at whole epochs (it reaches the final value one epoch earlier).
        """
        if self.warmup_teacher_temp_epochs <= 0:
            return self.teacher_temp
        progress = min(max(epoch / self.warmup_teacher_temp_epochs, 0.0), 1.0)
        return self.warmup_teacher_temp + (self.teacher_temp - self.warmup_teacher_temp) * progress

    def forward(self, student: Sequence[Tensor], teacher: Sequence[Tensor], teacher_temp: float) -> Tensor:
        """``student``: G + L logits ``[N, K]``, the first G the global views in the teacher's order;
        ``teacher``: G logits ``[N, K]`` of the global views. Row n of every tensor is the same image."""
        n_global = len(teacher)
        if n_global < 1 or len(student) < 2 or len(student) < n_global:
            raise MethodError(f"DINOLoss needs at least one teacher view and two student views, the teacher's first "
                              f"(got {n_global} teacher and {len(student)} student views)")
        targets = [F.softmax((_wide(t.detach()) - self.center) / teacher_temp, dim=-1) for t in teacher]
        log_probs = [F.log_softmax(_wide(s) / self.student_temp, dim=-1) for s in student]
        all_views = torch.stack(log_probs).sum(dim=0)
        # sum_{j != i} log p_j = (sum_j log p_j) - log p_i: one product per teacher view instead of one per pair.
        total = sum(-(q * (all_views - log_probs[i])).sum(dim=-1).mean() for i, q in enumerate(targets))
        return total / (n_global * (len(student) - 1))

    @torch.no_grad()
    def update_center(self, teacher: Sequence[Tensor]) -> None:
        """center <- m * center + (1 - m) * mean of the teacher logits over every view and every rank's rows."""
        rows = torch.cat([_wide(t.detach()) for t in teacher])
        # Sum and row count in one collective, so ranks with unequal shards still average the global batch.
        stats = torch.cat([rows.sum(dim=0), rows.new_tensor([rows.shape[0]])])
        if distributed.world_size() > 1:
            dist.all_reduce(stats, op=dist.ReduceOp.SUM)
        batch_center = stats[:-1] / stats[-1]
        self.center.mul_(self.center_momentum).add_(batch_center.to(self.center), alpha=1 - self.center_momentum)

    def extra_repr(self) -> str:
        return (f"out_dim={self.center.numel()}, student_temp={self.student_temp}, teacher_temp="
                f"{self.warmup_teacher_temp}->{self.teacher_temp} over {self.warmup_teacher_temp_epochs} epochs, "
                f"center_momentum={self.center_momentum}")
