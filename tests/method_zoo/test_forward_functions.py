"""The six forward functions on tiny models: outputs per stage, losses, and configuration errors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import method_zoo as mz

D_IN, D_EMB, D_PROJ, N = 6, 5, 4, 4


def _mlp(d_in: int, d_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, 8), nn.ReLU(), nn.Linear(8, d_out))


def _train_batch(n_images: int = N, n_views: int = 2) -> dict:
    g = torch.Generator().manual_seed(0)
    rows = n_images * n_views
    perm = torch.randperm(rows, generator=g)
    return {
        "image": torch.randn(rows, D_IN, generator=g),
        "sample_idx": torch.arange(n_images).repeat_interleave(n_views)[perm],
        "label": torch.randint(0, 3, (rows,), generator=g),
    }


def _val_batch() -> dict:
    return {"image": torch.randn(N, D_IN), "label": torch.arange(N) % 3}


class _Queue(nn.Module):
    def __init__(self, rows: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("rows", rows)

    def contents(self) -> torch.Tensor:
        return self.rows


def _modules(make_module) -> dict:
    torch.manual_seed(0)
    queues = nn.ModuleDict({"nnclr_support_set": _Queue(torch.randn(7, D_PROJ))})
    return {
        "simclr": make_module(
            mz.simclr_forward,
            backbone=_mlp(D_IN, D_EMB),
            projector=_mlp(D_EMB, D_PROJ),
            simclr_loss=mz.NTXEntLoss(),
        ),
        "vicreg": make_module(
            mz.vicreg_forward,
            backbone=_mlp(D_IN, D_EMB),
            projector=_mlp(D_EMB, D_PROJ),
            vicreg_loss=mz.VICRegLoss(),
        ),
        "barlow": make_module(
            mz.barlow_twins_forward,
            backbone=_mlp(D_IN, D_EMB),
            projector=_mlp(D_EMB, D_PROJ),
            barlow_loss=mz.BarlowTwinsLoss(),
        ),
        "nnclr": make_module(
            mz.nnclr_forward,
            backbone=_mlp(D_IN, D_EMB),
            projector=_mlp(D_EMB, D_PROJ),
            predictor=_mlp(D_PROJ, D_PROJ),
            nnclr_loss=mz.NTXEntLoss(),
            queues=queues,
        ),
        "byol": make_module(
            mz.byol_forward,
            backbone=mz.TeacherStudentWrapper(_mlp(D_IN, D_EMB)),
            projector=mz.TeacherStudentWrapper(_mlp(D_EMB, D_PROJ)),
            predictor=_mlp(D_PROJ, D_PROJ),
        ),
        "supervised": make_module(
            mz.supervised_forward, backbone=_mlp(D_IN, D_EMB), classifier=nn.Linear(D_EMB, 3)
        ),
    }


METHODS = ["simclr", "vicreg", "barlow", "nnclr", "byol", "supervised"]
REQUIRED = {
    "simclr": "simclr_loss",
    "vicreg": "vicreg_loss",
    "barlow": "barlow_loss",
    "nnclr": "predictor",
    "byol": "predictor",
    "supervised": "classifier",
}


@pytest.mark.parametrize("method", METHODS)
def test_train_returns_differentiable_loss_and_embedding(make_module, method):
    module = _modules(make_module)[method]
    batch = _train_batch()
    out = module(batch, "train")
    assert out["embedding"].shape == (2 * N, D_EMB)
    assert torch.equal(out["label"], batch["label"])
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("stage", ["val", "test"])
def test_eval_stages_return_embedding_without_loss(make_module, method, stage):
    out = _modules(make_module)[method](_val_batch(), stage)
    assert "loss" not in out
    assert out["embedding"].shape == (N, D_EMB)
    assert "label" in out
    assert ("logits" in out) == (method == "supervised")


@pytest.mark.parametrize("method", METHODS)
def test_missing_attribute_is_named(make_module, method):
    module = _modules(make_module)[method]
    delattr(module, REQUIRED[method])
    with pytest.raises(mz.MethodError, match=f"Module attribute '{REQUIRED[method]}'") as info:
        module(_val_batch(), "val")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("method", ["simclr", "vicreg", "barlow", "nnclr", "byol"])
def test_two_view_methods_reject_three_views(make_module, method):
    with pytest.raises(mz.MethodError, match="needs 2 views per image but the batch has 3"):
        _modules(make_module)[method](_train_batch(n_views=3), "train")


def test_missing_sample_idx_is_a_method_error(make_module):
    batch = _train_batch()
    del batch["sample_idx"]
    with pytest.raises(mz.MethodError, match=r"batch\['sample_idx'\]"):
        _modules(make_module)["simclr"](batch, "train")


def test_simclr_loss_is_ntxent_of_paired_projections(make_module):
    module = _modules(make_module)["simclr"]
    batch = _train_batch()
    z = module.projector(module.backbone(batch["image"]))
    z_a, z_b = mz.split_views(z, batch["sample_idx"], 2, "t")
    torch.testing.assert_close(module(batch, "train")["loss"], mz.NTXEntLoss()(z_a, z_b))


def test_supervised_logits_and_cross_entropy(make_module):
    module = _modules(make_module)["supervised"]
    batch = _train_batch(n_views=1)  # supervised does not pair views
    out = module(batch, "train")
    torch.testing.assert_close(out["logits"], module.classifier(module.backbone(batch["image"])))
    torch.testing.assert_close(out["loss"], F.cross_entropy(out["logits"], batch["label"]))
    del batch["label"]
    with pytest.raises(mz.MethodError, match=r"batch\['label'\]"):
        module(batch, "train")
