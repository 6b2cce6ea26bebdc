"""TeacherStudentWrapper: EMA schedule, update rule, gradient isolation, per-optimizer-step semantics."""

import copy
import math

import pytest
import torch
from torch import nn

from method_zoo import MethodError, TeacherStudentWrapper


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))


def test_schedule_endpoints_and_midpoint():
    w = TeacherStudentWrapper(_net(), base_ema=0.996, final_ema=1.0)
    assert w.current_ema == 0.996
    w.update_teacher(0, 100)
    assert math.isclose(w.current_ema, 0.996, abs_tol=1e-15)
    w.update_teacher(50, 100)
    assert math.isclose(w.current_ema, 0.998, abs_tol=1e-15)
    w.update_teacher(25, 100)
    expected = 1.0 - 0.004 * (math.cos(math.pi / 4) + 1) / 2
    assert math.isclose(w.current_ema, expected, abs_tol=1e-15)
    w.update_teacher(100, 100)
    assert w.current_ema == 1.0
    w.update_teacher(150, 100)  # past the end stays at the final value
    assert w.current_ema == 1.0


def test_non_positive_total_steps_is_a_method_error():
    with pytest.raises(MethodError, match="total_steps > 0"):
        TeacherStudentWrapper(_net()).update_teacher(0, 0)


def test_ema_formula_on_parameters_and_teacher_keeps_its_own_statistics():
    w = TeacherStudentWrapper(_net(), base_ema=0.9, final_ema=0.9)
    with torch.no_grad():
        for p in w.student.parameters():
            p.add_(1.0)
        w.student[1].running_mean.fill_(3.0)
    teacher_before = [p.clone() for p in w.teacher.parameters()]
    w.update_teacher(5, 10)
    for t, t0, s in zip(w.teacher.parameters(), teacher_before, w.student.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * t0 + 0.1 * s)
    # Running statistics must describe the teacher's own activations, never the student's.
    torch.testing.assert_close(w.teacher[1].running_mean, torch.zeros(4))


def test_teacher_gets_no_gradient_and_forward_is_student():
    w = TeacherStudentWrapper(_net())
    x = torch.randn(5, 3)
    torch.testing.assert_close(w(x), w.student(x))
    t_out = w.forward_teacher(x)
    assert not t_out.requires_grad
    w(x).sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in w.teacher.parameters())
    assert all(p.grad is not None for p in w.student.parameters())


def test_teacher_follows_wrapper_mode_and_is_checkpointed():
    w = TeacherStudentWrapper(_net())
    w.eval()
    assert not w.teacher.training
    w.train()
    assert w.teacher.training
    keys = w.state_dict().keys()
    assert any(k.startswith("teacher.") for k in keys) and any(k.startswith("student.") for k in keys)


def _train(micro_batches_per_step: int, steps: int, data: torch.Tensor) -> TeacherStudentWrapper:
    torch.manual_seed(1)
    w = TeacherStudentWrapper(nn.Linear(3, 2, dtype=torch.float64), base_ema=0.5, final_ema=0.9)
    opt = torch.optim.SGD(w.student.parameters(), lr=0.1)
    for step in range(steps):
        opt.zero_grad()
        for chunk in data[step].chunk(micro_batches_per_step):
            (w(chunk).pow(2).mean() / micro_batches_per_step).backward()
        opt.step()
        w.update_teacher(step + 1, steps)  # once per optimizer step
    return w


def test_accumulation_does_not_change_the_teacher():
    torch.manual_seed(0)
    data = torch.randn(4, 8, 3, dtype=torch.float64)
    plain = _train(1, 4, data)
    accumulated = _train(4, 4, data)
    for a, b in zip(plain.teacher.parameters(), accumulated.teacher.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert accumulated.current_ema == 0.9


def test_k_updates_compose_k_ema_steps():
    w = TeacherStudentWrapper(nn.Linear(2, 2, dtype=torch.float64), base_ema=0.8, final_ema=0.95)
    expected = copy.deepcopy(w.teacher)
    for step in range(3):
        with torch.no_grad():
            for p in w.student.parameters():
                p.add_(step + 1.0)
        tau = 0.95 - 0.15 * (math.cos(math.pi * step / 3) + 1) / 2
        with torch.no_grad():
            for e, s in zip(expected.parameters(), w.student.parameters(), strict=True):
                e.copy_(tau * e + (1 - tau) * s)
        w.update_teacher(step, 3)
    for a, b in zip(w.teacher.parameters(), expected.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_bf16_teacher_averages_in_float32_and_follows_the_float64_formula():
    """DeepSpeed's bf16 casts the teacher to bf16 too. 300 steps at tau=0.996 towards a fixed student: the teacher
    must land where the float64 formula puts it, s + (t0 - s) * tau**300, up to one bf16 rounding. An average kept
    in bf16 itself (the control) rounds most updates away and misses by far more."""
    w = TeacherStudentWrapper(_net(0), base_ema=0.996, final_ema=0.996).to(torch.bfloat16)
    with torch.no_grad():
        for p in w.student.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    t0 = [p.detach().double() for p in w.teacher.parameters()]
    s = [p.detach().double() for p in w.student.parameters()]
    control = [p.detach().clone() for p in w.teacher.parameters()]
    for step in range(300):
        w.update_teacher(step, 300)
        for c, student in zip(control, w.student.parameters(), strict=True):
            c.mul_(0.996).add_(student.detach(), alpha=0.004)
    expected = [si + (ti - si) * 0.996**300 for ti, si in zip(t0, s, strict=True)]
    ours = max(((p.double() - e).abs() / e.abs().clamp(min=0.05)).max().item()
               for p, e in zip(w.teacher.parameters(), expected, strict=True))
    naive = max(((c.double() - e).abs() / e.abs().clamp(min=0.05)).max().item()
                for c, e in zip(control, expected, strict=True))
    assert next(w.teacher.parameters()).dtype == torch.bfloat16
    assert ours <= 2**-8, ours  # one bf16 rounding of the final value
    assert naive > 10 * ours, (naive, ours)


def test_bf16_float32_copy_follows_a_teacher_loaded_from_a_checkpoint():
    """The float32 copy must not overwrite a teacher that load_state_dict (a resume in the same process) wrote."""
    w = TeacherStudentWrapper(_net(0), base_ema=0.9, final_ema=0.9).to(torch.bfloat16)
    saved = copy.deepcopy(w.state_dict())
    with torch.no_grad():
        for p in w.student.parameters():
            p.add_(1.0)
    w.update_teacher(0, 10)  # the copy now holds an average that moved towards the shifted student
    w.load_state_dict(saved)  # back to the saved teacher and student
    w.update_teacher(0, 10)  # student == teacher again: one more step must leave the loaded teacher where it is
    for name, value in w.teacher.state_dict().items():
        torch.testing.assert_close(value, saved[f"teacher.{name}"], msg=name)
