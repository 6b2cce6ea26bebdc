"""The named heads build exactly the layers the configs used to spell out, so a seed gives the same parameters.

OLD_HEADS is a literal copy of the head sections of conf/method/*.yaml before they named method_zoo.heads; the new
config comes from composing the real conf tree. Both are instantiated with Hydra under the same seed, in the order
the Module's config lists them, and must agree key by key, in shape and in value.
"""

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from method_zoo import TeacherStudentWrapper, heads
from orchestra.config.compose import compose


def _linear(d_in: str, d_out: str) -> dict:
    return {"_target_": "torch.nn.Linear", "in_features": d_in, "out_features": d_out}


def _bn(d: str) -> dict:
    return {"_target_": "torch.nn.BatchNorm1d", "num_features": d}


RELU = {"_target_": "torch.nn.ReLU"}


def _sequential(*layers: dict) -> dict:
    return {"_target_": "torch.nn.Sequential", "_args_": list(layers)}


OLD_HEADS = {
    "simclr": {
        "projector": _sequential(
            _linear("${embedding_dim}", "${module.hparams.proj_hidden_dim}"),
            RELU,
            _linear("${module.hparams.proj_hidden_dim}", "${module.hparams.proj_dim}"),
        ),
    },
    "byol": {
        "projector": {
            "_target_": "method_zoo.TeacherStudentWrapper",
            "base_ema": "${module.hparams.base_ema}",
            "student": _sequential(
                _linear("${embedding_dim}", "${module.hparams.proj_hidden_dim}"),
                _bn("${module.hparams.proj_hidden_dim}"),
                RELU,
                _linear("${module.hparams.proj_hidden_dim}", "${module.hparams.projection_dim}"),
            ),
        },
        "predictor": _sequential(
            _linear("${module.hparams.projection_dim}", "${module.hparams.pred_hidden_dim}"),
            _bn("${module.hparams.pred_hidden_dim}"),
            RELU,
            _linear("${module.hparams.pred_hidden_dim}", "${module.hparams.projection_dim}"),
        ),
    },
    "nnclr": {
        "projector": _sequential(
            _linear("${embedding_dim}", "${module.hparams.proj_hidden_dim}"),
            _bn("${module.hparams.proj_hidden_dim}"),
            RELU,
            _linear("${module.hparams.proj_hidden_dim}", "${module.hparams.projection_dim}"),
        ),
        "predictor": _sequential(
            _linear("${module.hparams.projection_dim}", "${module.hparams.pred_hidden_dim}"),
            _bn("${module.hparams.pred_hidden_dim}"),
            RELU,
            _linear("${module.hparams.pred_hidden_dim}", "${module.hparams.projection_dim}"),
        ),
    },
    "vicreg": {
        "projector": _sequential(
            _linear("${embedding_dim}", "${module.hparams.proj_dim}"),
            _bn("${module.hparams.proj_dim}"),
            RELU,
            _linear("${module.hparams.proj_dim}", "${module.hparams.proj_dim}"),
        ),
    },
    "barlow_twins": {
        "projector": _sequential(
            _linear("${embedding_dim}", "${module.hparams.proj_dim}"),
            _bn("${module.hparams.proj_dim}"),
            RELU,
            _linear("${module.hparams.proj_dim}", "${module.hparams.proj_dim}"),
        ),
    },
    "supervised": {
        "classifier": {"_target_": "torch.nn.Linear", "in_features": "${embedding_dim}",
                       "out_features": "${data.num_classes}"},
    },
}

# What the old conf/experiment/seed_*.yaml set on the head nodes themselves (the others only set hparams).
OLD_EXPERIMENT_HEADS = {"supervised": {"classifier": {"in_features": 2048, "out_features": 1000}}}


def _build(cfg, head_nodes: dict, seed: int = 0) -> dict[str, nn.Module]:
    """Instantiate ``head_nodes`` (in order) with ``cfg``'s embedding_dim, hparams and classes to interpolate."""
    hparams = OmegaConf.to_container(cfg.module.hparams, resolve=True) if "hparams" in cfg.module else {}
    root = OmegaConf.create({
        "embedding_dim": cfg.embedding_dim,
        "data": {"num_classes": cfg.data.num_classes},
        "module": {"hparams": hparams, **head_nodes},
    })
    torch.manual_seed(seed)
    return {name: instantiate(root.module[name]) for name in head_nodes}


def _new_heads(cfg) -> dict:
    return {name: OmegaConf.to_container(cfg.module[name]) for name in OLD_HEADS[cfg.method_name]}


def _assert_same(old: dict[str, nn.Module], new: dict[str, nn.Module], values: bool) -> None:
    assert list(old) == list(new)
    for name in old:
        assert type(old[name]) is type(new[name]), name
        assert repr(old[name]) == repr(new[name]), name  # same layers, same order, same sizes
        old_state, new_state = old[name].state_dict(), new[name].state_dict()
        assert list(old_state) == list(new_state), name
        for key in old_state:
            assert old_state[key].shape == new_state[key].shape, (name, key)
            assert old_state[key].dtype == new_state[key].dtype, (name, key)
            if values:
                assert torch.equal(old_state[key], new_state[key]), (name, key)


NARROW = ["backbone=resnet18", "++module.hparams.proj_dim=48", "++module.hparams.proj_hidden_dim=40",
          "++module.hparams.pred_hidden_dim=24", "++module.hparams.projection_dim=16"]


@pytest.mark.parametrize("overrides", [[], NARROW], ids=["defaults", "resnet18-narrow"])
@pytest.mark.parametrize("method", list(OLD_HEADS))
def test_named_heads_give_the_old_layers_and_the_same_numbers_under_a_seed(method, overrides):
    cfg = compose([f"method={method}", *overrides])
    old = _build(cfg, OLD_HEADS[method], seed=3)
    new = _build(cfg, _new_heads(cfg), seed=3)
    _assert_same(old, new, values=True)
    # And the RNG was left where the old lists left it: whatever the Module builds next starts from the same draw.
    torch.manual_seed(3)
    _build(cfg, OLD_HEADS[method], seed=3)
    after_old = torch.rand(4)
    _build(cfg, _new_heads(cfg), seed=3)
    assert torch.equal(torch.rand(4), after_old)


@pytest.mark.parametrize("method", list(OLD_HEADS))
def test_the_seed_experiments_keep_their_head_shapes(method):
    cfg = compose([f"+experiment=seed_{method}"])
    with torch.device("meta"):  # ResNet-50 widths and 8192-wide projectors: shapes only, no memory
        old_heads = OmegaConf.merge(OLD_HEADS[method], OLD_EXPERIMENT_HEADS.get(method, {}))
        old = _build(cfg, OmegaConf.to_container(old_heads))
        new = _build(cfg, _new_heads(cfg))
    _assert_same(old, new, values=False)
    if method == "supervised":
        assert new["classifier"].weight.shape == (1000, 2048)


def test_embedding_dim_follows_the_backbone():
    for backbone, dim in [("small_cnn", 3136), ("resnet18", 512), ("resnet50", 2048)]:
        cfg = compose(["method=byol", f"backbone={backbone}"])
        with torch.device("meta"):
            projector = _build(cfg, _new_heads(cfg))["projector"]
        assert isinstance(projector, TeacherStudentWrapper)
        assert projector.student[0].in_features == dim


def test_defaults_are_the_papers():
    assert [tuple(p.shape) for p in heads.simclr_projector(2048).parameters()] == \
        [(2048, 2048), (2048,), (128, 2048), (128,)]
    byol = heads.byol_projector(2048)
    assert [type(m) for m in byol] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert (byol[0].out_features, byol[-1].out_features) == (4096, 256)
    assert (heads.byol_predictor()[0].in_features, heads.byol_predictor()[-1].out_features) == (256, 256)
    nnclr = heads.nnclr_projector(2048)
    assert [type(m) for m in nnclr] == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear]
    assert nnclr[-1].out_features == 256 and heads.nnclr_predictor()[0].out_features == 4096
    with torch.device("meta"):
        for head in (heads.vicreg_expander(2048), heads.barlow_twins_projector(2048)):
            assert [m.out_features for m in head if isinstance(m, nn.Linear)] == [8192, 8192, 8192]
            assert sum(isinstance(m, nn.BatchNorm1d) for m in head) == 2
    assert heads.linear_classifier(2048).out_features == 1000


def test_mlp_without_hidden_layers_is_one_linear_and_rejects_negative_depth():
    assert [type(m) for m in heads.mlp(5, 7, 3, hidden_layers=0)] == [nn.Linear]
    with pytest.raises(ValueError, match="hidden_layers >= 0"):
        heads.mlp(5, 7, 3, hidden_layers=-1)
