"""BYOL's teacher/student wiring and NNCLR's support-set lookup, checked against hand computations."""

import pytest
import torch
from torch import nn

import method_zoo as mz
from method_zoo.forwards.nnclr import nearest_neighbour


def _lin(d_in: int, d_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, 6), nn.ReLU(), nn.Linear(6, d_out))


def _two_view_batch(n: int = 3, d: int = 4) -> dict:
    torch.manual_seed(1)
    return {"image": torch.randn(2 * n, d), "sample_idx": torch.tensor([2, 0, 1, 0, 2, 1][: 2 * n])}


def _byol(make_module, **extra):
    torch.manual_seed(0)
    return make_module(
        mz.byol_forward,
        backbone=mz.TeacherStudentWrapper(_lin(4, 5)),
        projector=mz.TeacherStudentWrapper(_lin(5, 3)),
        predictor=_lin(3, 3),
        **extra,
    )


def _perturb_students(module) -> None:
    # Make teacher and student differ so the test can tell which one produced what.
    with torch.no_grad():
        for p in list(module.backbone.student.parameters()) + list(module.projector.student.parameters()):
            p.add_(0.3)


def test_byol_embedding_is_teacher_and_loss_sums_both_directions(make_module):
    module = _byol(make_module)
    _perturb_students(module)
    batch = _two_view_batch()
    out = module(batch, "train")
    teacher_emb = module.backbone.teacher(batch["image"])
    torch.testing.assert_close(out["embedding"], teacher_emb)
    assert not out["embedding"].requires_grad

    p = module.predictor(module.projector.student(module.backbone.student(batch["image"])))
    t = module.projector.teacher(teacher_emb)
    p_a, p_b = mz.split_views(p, batch["sample_idx"], 2, "t")
    t_a, t_b = mz.split_views(t, batch["sample_idx"], 2, "t")
    loss = mz.BYOLLoss()
    torch.testing.assert_close(out["loss"], loss(p_a, t_b) + loss(p_b, t_a))

    out["loss"].backward()
    assert all(q.grad is None for q in module.backbone.teacher.parameters())
    assert all(q.grad is not None for q in module.backbone.student.parameters())


def test_byol_uses_custom_loss_when_given(make_module):
    class Doubled(mz.BYOLLoss):
        def forward(self, p, z):
            return 2 * super().forward(p, z)

    batch = _two_view_batch()
    default = _byol(make_module)(batch, "train")["loss"]
    custom = _byol(make_module, byol_loss=Doubled())(batch, "train")["loss"]
    torch.testing.assert_close(custom, 2 * default)


def test_byol_requires_teacher_student_wrappers(make_module):
    module = _byol(make_module)
    module.projector = _lin(5, 3)
    with pytest.raises(mz.MethodError, match="'projector' to be a TeacherStudentWrapper"):
        module(_two_view_batch(), "val")


class _Queue(nn.Module):
    def __init__(self, rows: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("rows", rows)

    def contents(self) -> torch.Tensor:
        return self.rows


def _nnclr(make_module, support: torch.Tensor | None):
    torch.manual_seed(0)
    extra = {} if support is None else {"queues": nn.ModuleDict({"nnclr_support_set": _Queue(support)})}
    return make_module(
        mz.nnclr_forward,
        backbone=_lin(4, 5),
        projector=_lin(5, 3),
        predictor=_lin(3, 3),
        nnclr_loss=mz.NTXEntLoss(0.2),
        **extra,
    )


def test_nearest_neighbour_is_by_cosine_not_distance():
    support = torch.tensor([[10.0, 0.0], [0.1, 0.1], [0.0, -1.0]])
    z = torch.tensor([[1.0, 0.9], [3.0, -0.1], [0.2, -5.0]])
    torch.testing.assert_close(nearest_neighbour(z, support), support[[1, 0, 2]])


@pytest.mark.parametrize("support_rows", [0, 9])
def test_nnclr_loss_uses_neighbours_and_returns_queue_rows(make_module, support_rows):
    support = torch.randn(support_rows, 3)
    module = _nnclr(make_module, support)
    batch = _two_view_batch()
    out = module(batch, "train")
    z = module.projector(module.backbone(batch["image"]))
    p = module.predictor(z)
    z_a, z_b = mz.split_views(z.detach(), batch["sample_idx"], 2, "t")
    p_a, p_b = mz.split_views(p, batch["sample_idx"], 2, "t")
    if support_rows:
        nn_a, nn_b = nearest_neighbour(z_a, support), nearest_neighbour(z_b, support)
        assert all(any(torch.equal(r, s) for s in support) for r in nn_a)
    else:
        nn_a, nn_b = z_a, z_b  # empty queue: each view is its own neighbour
    want = (module.nnclr_loss(nn_a, p_b) + module.nnclr_loss(nn_b, p_a)) / 2
    torch.testing.assert_close(out["loss"], want)
    torch.testing.assert_close(out["nnclr_support_set"], z_a)
    assert not out["nnclr_support_set"].requires_grad


def test_nnclr_without_queue_names_the_callback(make_module):
    with pytest.raises(mz.MethodError, match=r"OnlineQueue\(key='nnclr_support_set'"):
        _nnclr(make_module, None)(_two_view_batch(), "train")
    # Evaluation does not touch the queue, so it works before the callback has registered it.
    assert "loss" not in _nnclr(make_module, None)({"image": torch.randn(2, 4)}, "val")
