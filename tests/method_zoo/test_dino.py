"""DINO: the loss against the paper's formula in float64, the centre, the schedules, the frozen last layer, the
multi-crop batch contract and the teacher seeing only global views."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from method_zoo import MethodError, TeacherStudentWrapper
from method_zoo.forwards.common import training_progress
from method_zoo.forwards.dino import dino_forward
from method_zoo.losses.dino import DINOLoss
from method_zoo.parts.dino import DINOHead

sys.path.insert(0, str(Path(__file__).parent))  # the spawned ranks import the worker by plain name
import dino_ddp_worker as ddp  # noqa: E402
from rendezvous_store import hosted_store_env  # noqa: E402

K, N, G, L = 7, 4, 2, 3


def dino_reference(student, teacher, center, t_s, t_t):
    """Paper, eq. 2 and Alg. 1, with explicit loops: mean over pairs (i global, j any view, j != i) of
    mean_n H(P_t, P_s), P_t = softmax((t - c) / t_t), P_s = softmax(s / t_s), H(a, b) = -sum_k a_k log b_k."""
    def softmax(row, temp, shift):
        e = [torch.exp((row[k] - shift[k]) / temp) for k in range(len(row))]
        total = sum(e)
        return [x / total for x in e]

    zero = [torch.zeros((), dtype=torch.float64)] * K
    terms = []
    for i, t in enumerate(teacher):
        for j, s in enumerate(student):
            if i == j:
                continue
            h = 0
            for n in range(t.shape[0]):
                p_t = softmax(t[n], t_t, list(center))
                p_s = softmax(s[n], t_s, zero)
                h = h - sum(p_t[k] * torch.log(p_s[k]) for k in range(K))
            terms.append(h / t.shape[0])
    return sum(terms) / len(terms)


def _views(count, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(N, K, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(count)]


def test_loss_value_and_gradient_match_the_paper_formula_with_centring_and_sharpening():
    student, teacher = _views(G + L, 0), [v.detach() * 3 for v in _views(G, 1)]
    loss_fn = DINOLoss(K, student_temp=0.1)
    loss_fn.center.copy_(torch.linspace(-0.5, 0.5, K))
    got = loss_fn(student, teacher, teacher_temp=0.04)
    want = dino_reference(student, teacher, loss_fn.center.double(), 0.1, 0.04)
    assert got.dtype == torch.float64
    assert abs(got.item() - want.item()) <= 1e-6 * max(1.0, abs(want.item()))
    got_grads = torch.autograd.grad(got, student)
    want_grads = torch.autograd.grad(want, student)
    for a, b in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        assert b.abs().max() > 1e-3  # every student view, global and local, receives a gradient


def test_no_same_view_pair_a_global_student_view_learns_only_from_the_other_teacher_view():
    student, teacher = _views(G + L, 2), [v.detach() for v in _views(G, 3)]
    loss_fn = DINOLoss(K)
    grad = torch.autograd.grad(loss_fn(student, teacher, 0.04), student[0])[0]
    changed = [teacher[0] + 5 * torch.randn_like(teacher[0]), teacher[1]]
    torch.testing.assert_close(torch.autograd.grad(loss_fn(student, changed, 0.04), student[0])[0], grad)
    moved = [teacher[0], teacher[1] + 5 * torch.randn_like(teacher[1])]
    assert not torch.allclose(torch.autograd.grad(loss_fn(student, moved, 0.04), student[0])[0], grad)


def test_centring_and_sharpening_change_the_targets():
    student, teacher = _views(G, 4), [v.detach() for v in _views(G, 5)]
    loss_fn = DINOLoss(K)
    plain = loss_fn(student, teacher, 0.04)
    assert not torch.isclose(plain, loss_fn(student, teacher, 0.07))
    loss_fn.center.fill_(3.0)  # a constant centre is invisible to a softmax
    torch.testing.assert_close(loss_fn(student, teacher, 0.04), plain)
    loss_fn.center.copy_(torch.arange(K, dtype=torch.float32))
    assert not torch.isclose(loss_fn(student, teacher, 0.04), plain)


def test_centre_is_the_ema_of_the_teachers_batch_mean_over_all_global_views():
    loss_fn = DINOLoss(K, center_momentum=0.9)
    first, second = _views(G, 6), _views(G, 7)
    loss_fn.update_center(first)
    loss_fn.update_center(second)
    mean = [torch.cat([v.detach() for v in views]).mean(dim=0) for views in (first, second)]
    want = 0.9 * (0.9 * 0 + 0.1 * mean[0]) + 0.1 * mean[1]
    torch.testing.assert_close(loss_fn.center.double(), want, rtol=0, atol=1e-6)
    assert "center" in loss_fn.state_dict()  # checkpointed with the Module


def test_teacher_temperature_schedule_in_epochs():
    loss_fn = DINOLoss(K, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_teacher_temp_epochs=30)
    for epoch, want in [(0, 0.04), (7.5, 0.0475), (15, 0.055), (30, 0.07), (100, 0.07)]:
        assert loss_fn.teacher_temp_at(epoch) == pytest.approx(want, abs=1e-12), epoch
    assert DINOLoss(K, warmup_teacher_temp_epochs=0).teacher_temp_at(0) == 0.07


def fake_trainer(step: int, steps_per_epoch: int, accumulate: int = 1) -> SimpleNamespace:
    return SimpleNamespace(global_step=step, current_epoch=step // steps_per_epoch, log_every_n_steps=50,
                           num_training_batches=steps_per_epoch * accumulate, accumulate_grad_batches=accumulate)


class Dino(nn.Module):
    """orchestra.Module's role for dino_forward: the parts as attributes, and a trainer to read progress from."""

    def __init__(self, out_dim: int = 16, freeze_epochs: int = 1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = TeacherStudentWrapper(nn.Sequential(
            nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()))
        self.projector = TeacherStudentWrapper(DINOHead(4, out_dim, hidden_dim=16, bottleneck_dim=8,
                                                        freeze_last_layer_epochs=freeze_epochs))
        self.dino_loss = DINOLoss(out_dim, warmup_teacher_temp_epochs=2)
        self.trainer: SimpleNamespace | None = None

    def forward(self, batch: dict, stage: str) -> dict:
        return dino_forward(self, batch, stage)


def multi_crop_batch(seed: int, n: int = N, n_local: int = L) -> dict:
    """The multi-crop contract: globals view-major in image (12 px), locals view-major in local_image (6 px)."""
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(G * n, 1, 12, 12, generator=g), "sample_idx": torch.arange(n).repeat(G),
            "local_image": torch.randn(n_local * n, 1, 6, 6, generator=g),
            "local_sample_idx": torch.arange(n).repeat(n_local), "label": torch.arange(n)}


def test_progress_and_temperature_follow_the_trainers_step():
    module = Dino()
    assert training_progress(module) == (0, 0.0)
    module.trainer = fake_trainer(step=15, steps_per_epoch=10)
    assert training_progress(module) == (1, 1.5)
    module.trainer = fake_trainer(step=15, steps_per_epoch=10, accumulate=4)  # steps are optimizer steps
    assert training_progress(module) == (1, 1.5)
    for step, want in [(0, 0.04), (5, 0.0475), (10, 0.055), (20, 0.07), (35, 0.07)]:
        module.trainer = fake_trainer(step, steps_per_epoch=10)
        assert module(multi_crop_batch(step), "train")["teacher_temp"] == pytest.approx(want, abs=1e-12)


def test_last_layer_is_bit_identical_through_epoch_0_under_adamw_weight_decay_and_trains_after():
    module = Dino(freeze_epochs=1)
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.5)
    last = module.projector.student.last_layer.weight
    start, mlp_start = last.detach().clone(), module.projector.student.mlp[0].weight.detach().clone()
    steps_per_epoch = 3
    for step in range(2 * steps_per_epoch):
        module.trainer = fake_trainer(step, steps_per_epoch)
        optimizer.zero_grad()
        module(multi_crop_batch(step), "train")["loss"].backward()
        if step < steps_per_epoch:
            assert last.grad is None
        optimizer.step()
        module.projector.update_teacher(step + 1, 2 * steps_per_epoch)
        if step == steps_per_epoch - 1:
            assert torch.equal(last, start)  # not even weight decay touched it
            assert last not in optimizer.state
            assert not torch.equal(module.projector.student.mlp[0].weight, mlp_start)
    assert not torch.equal(last, start)


def test_teacher_sees_only_global_views_and_embedding_comes_from_it():
    module = Dino()
    seen = {"teacher": [], "student": []}
    module.backbone.teacher.register_forward_pre_hook(lambda m, args: seen["teacher"].append(args[0].shape[-1]))
    module.backbone.student.register_forward_pre_hook(lambda m, args: seen["student"].append(args[0].shape[-1]))
    batch = multi_crop_batch(0)
    out = module(batch, "train")
    assert seen == {"teacher": [12], "student": [12, 6]}  # one backbone call per resolution group
    torch.testing.assert_close(out["embedding"], module.backbone.forward_teacher(batch["image"]))
    assert out["loss"].requires_grad and torch.equal(out["label"], batch["label"])
    assert module.dino_loss.center.abs().sum() > 0


def test_validation_needs_no_crops_and_does_not_move_the_centre():
    module = Dino()
    out = module({"image": torch.randn(5, 1, 12, 12)}, "val")
    assert out["embedding"].shape == (5, 4) and "loss" not in out
    assert module.dino_loss.center.abs().sum() == 0


def test_a_batch_without_local_crops_is_one_line():
    batch = multi_crop_batch(0)
    del batch["local_image"], batch["local_sample_idx"]
    with pytest.raises(MethodError) as error:
        Dino()(batch, "train")
    assert "\n" not in str(error.value) and "data.local_views" in str(error.value)


def test_unwrapped_parts_are_one_line():
    module = Dino()
    module.projector = module.projector.student
    with pytest.raises(MethodError, match="TeacherStudentWrapper"):
        module(multi_crop_batch(0), "train")


def test_head_shapes_unit_prototypes_and_bad_sizes():
    head = DINOHead(4, out_dim=10, hidden_dim=16, bottleneck_dim=8, n_layers=3)
    logits = head(torch.randn(6, 4))
    assert logits.shape == (6, 10) and logits.abs().max() <= 1 + 1e-6  # cosine similarities
    assert [type(m).__name__ for m in head.mlp] == ["Linear", "GELU", "Linear", "GELU", "Linear"]
    assert head.last_layer.bias is None
    with pytest.raises(MethodError):
        DINOHead(4, n_layers=0)


def test_two_gloo_ranks_equal_one_process_student_teacher_centre_and_frozen_prototypes(tmp_path):
    with hosted_store_env():
        mp.spawn(ddp.worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    single = ddp.train(rank=0, world=1)
    initial = ddp.TinyDino().state_dict()
    assert single["dino_loss.center"].abs().max() > 1e-2
    for name, value in single.items():
        if name.endswith("weight") and "last_layer" not in name or name == "dino_loss.center":
            assert (value - initial.get(name, torch.zeros_like(value))).abs().max() > 1e-3, name  # it trained
        for result in ranks:
            torch.testing.assert_close(result[name], value, rtol=0, atol=1e-9, msg=name)
    for state in (single, *ranks):  # frozen through epoch 0 under DDP too, trained in epoch 1
        first = initial["projector.student.last_layer.weight"]
        assert torch.equal(state["after_epoch_0.last_layer"], first)
        assert not torch.equal(state["projector.student.last_layer.weight"], first)


def test_bf16_logits_give_a_float32_loss_and_centre():
    """bf16 weights (trainer.precision=bf16-true, DeepSpeed) must not round the softmax over prototypes or the EMA."""
    student = [v.detach().to(torch.bfloat16).requires_grad_() for v in _views(G + L, 8)]
    teacher = [v.detach().to(torch.bfloat16) for v in _views(G, 9)]
    loss_fn = DINOLoss(K)
    loss = loss_fn(student, teacher, 0.04)
    loss.backward()
    loss_fn.update_center(teacher)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert student[0].grad.dtype == torch.bfloat16 and loss_fn.center.dtype == torch.float32
    want = 0.1 * torch.cat([t.float() for t in teacher]).mean(dim=0)
    torch.testing.assert_close(loss_fn.center, want, rtol=0, atol=1e-6)
