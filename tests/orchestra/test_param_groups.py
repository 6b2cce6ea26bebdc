"""``optim.param_groups``: named Module parts with options of their own (SimSiam's fixed-lr predictor).

The learning rates are read from real Trainer runs, step by step, and a run stopped after one epoch and resumed
from its checkpoint must continue exactly as the uninterrupted run (groups, lrs and weights).
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torch.utils.data import DataLoader, Dataset

from orchestra import Module
from orchestra.callbacks import OnlineProbe
from orchestra.cli import main
from orchestra.config.validate import config_problems
from orchestra.errors import UserError
from orchestra.model.lr_scaling import apply_lr_scaling

LR, PROJECTOR_LR, PROBE_LR = 0.1, 0.3, 0.02
STEPS_PER_EPOCH, EPOCHS = 4, 2
GROUPS = [{"params": "predictor", "fixed_lr": True},
          {"params": ["projector"], "lr": PROJECTOR_LR, "weight_decay": 0.0}]


def regression_forward(self: Module, batch: dict, stage: str) -> dict:
    """Enough of a method to train every part: the predictor's output is pulled towards the image."""
    out = {"embedding": self.backbone(batch["image"]), "label": batch["label"]}
    if stage == "train":
        out["loss"] = (self.predictor(self.projector(out["embedding"])) - batch["image"]).pow(2).mean()
    return out


class Points(Dataset):
    def __init__(self, n: int = 8 * STEPS_PER_EPOCH) -> None:
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.x[i], "label": self.y[i]}


def make_module(groups: list | None = GROUPS, **optim: object) -> Module:
    torch.manual_seed(0)
    return Module(regression_forward, backbone=nn.Linear(4, 6), projector=nn.Linear(6, 5), predictor=nn.Linear(5, 4),
                  optim={"name": "sgd", "lr": LR, "weight_decay": 1e-4, "warmup_epochs": 0, "min_lr_ratio": 0.0,
                         **({"param_groups": groups} if groups is not None else {}), **optim})


class RecordLrs(pl.Callback):
    """The rate each group's step uses, keyed by the step (read before the step, after the previous schedule step)."""

    def __init__(self) -> None:
        self.lrs: dict[int, list[float]] = {}

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        self.lrs[trainer.global_step] = [g["lr"] for g in trainer.optimizers[0].param_groups]


class StopAfterFirstEpoch(pl.Callback):
    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == 0:
            trainer.save_checkpoint(self.path)
            trainer.should_stop = True


def fit(module: Module, *callbacks: pl.Callback, ckpt_path: Path | None = None) -> pl.Trainer:
    trainer = pl.Trainer(accelerator="cpu", max_epochs=EPOCHS, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0, callbacks=[OnlineProbe(num_classes=3, input_dim=6, lr=PROBE_LR),
                                                            *callbacks])
    trainer.fit(module, DataLoader(Points(), batch_size=8), ckpt_path=ckpt_path)
    return trainer


def cosine(step: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * step / (STEPS_PER_EPOCH * EPOCHS)))


@pytest.fixture(scope="module")
def whole_run() -> tuple[pl.Trainer, RecordLrs]:
    record = RecordLrs()
    return fit(make_module(), record), record


def test_a_fixed_lr_group_keeps_its_rate_while_the_others_follow_the_cosine(whole_run):
    trainer, record = whole_run
    groups = trainer.optimizers[0].param_groups
    assert [g.get("name") for g in groups] == [None, "predictor", "projector", None]
    assert groups[-1]["evaluator"] and groups[2]["weight_decay"] == 0.0 and groups[0]["weight_decay"] == 1e-4
    assert sorted(record.lrs) == list(range(STEPS_PER_EPOCH * EPOCHS))
    for step, (main_lr, predictor_lr, projector_lr, probe_lr) in record.lrs.items():
        assert main_lr == pytest.approx(LR * cosine(step), abs=1e-12), step
        assert projector_lr == pytest.approx(PROJECTOR_LR * cosine(step), abs=1e-12), step
        assert predictor_lr == LR and probe_lr == PROBE_LR, step
    assert record.lrs[7][0] < 0.1 * LR  # the schedule really decayed the rest
    # and after the last scheduler step: the rest at the end of the cosine, the fixed groups where they started
    assert [g["lr"] for g in groups] == pytest.approx([0.0, LR, 0.0, PROBE_LR], abs=1e-12)


def test_without_param_groups_the_groups_are_main_and_probe_as_before():
    trainer = fit(make_module(groups=None))
    groups = trainer.optimizers[0].param_groups
    assert len(groups) == 2 and groups[1]["evaluator"] and groups[1]["lr"] == PROBE_LR
    assert len(groups[0]["params"]) == 6  # backbone, projector and predictor: weight and bias each


def test_resume_restores_the_groups_their_rates_and_the_weights_exactly(tmp_path, whole_run):
    whole, whole_lrs = whole_run
    fit(make_module(), StopAfterFirstEpoch(tmp_path / "epoch0.ckpt"))
    record = RecordLrs()
    resumed = fit(make_module(), record, ckpt_path=tmp_path / "epoch0.ckpt")
    assert sorted(record.lrs) == list(range(STEPS_PER_EPOCH, STEPS_PER_EPOCH * EPOCHS))
    assert record.lrs == {step: whole_lrs.lrs[step] for step in record.lrs}
    old, new = whole.optimizers[0].param_groups, resumed.optimizers[0].param_groups
    for a, b in zip(old, new, strict=True):
        assert {k: v for k, v in a.items() if k != "params"} == {k: v for k, v in b.items() if k != "params"}
    for (name, a), (_, b) in zip(whole.lightning_module.state_dict().items(),
                                 resumed.lightning_module.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7, msg=name)


def test_lr_scaling_scales_a_groups_own_rate_by_the_same_rule():
    cfg = OmegaConf.create({
        "data": {"batch_size": 64}, "trainer": {"accumulate_grad_batches": 2},
        "optim": {"lr": 0.05, "lr_scaling": "linear", "base_batch_size": 256,
                  "param_groups": [{"params": "predictor", "fixed_lr": True}, {"params": "projector", "lr": 0.2}]},
        "module": {"optim": "${optim}"}})
    record = apply_lr_scaling(cfg)
    assert cfg.optim.lr == pytest.approx(0.025) and cfg.optim.param_groups[1].lr == pytest.approx(0.1)
    # a group without its own lr (SimSiam's predictor) is fixed at the scaled optim.lr
    assert record["param_groups"] == [{"params": "predictor", "lr": pytest.approx(0.025), "fixed_lr": True},
                                      {"params": "projector", "lr": pytest.approx(0.1), "fixed_lr": False}]


@pytest.mark.parametrize(("groups", "says"), [
    ([{"params": "predictr"}], "optim.param_groups.0.params: 'predictr' is not a part of the Module; its parts: "
                               "backbone, projector, predictor"),
    ([{"params": "projector.7"}], "'projector.7' names no submodule or parameter of 'projector'"),
    ([{"params": "predictor"}, {"params": "predictor.weight"}], "optim.param_groups.1.params: 'predictor.weight' "
                                                                "shares parameters with 'predictor'"),
    ([{"params": "predictor", "fixed": True}], "optim.param_groups.0 has unknown key(s) fixed"),
    ([{"params": []}], "optim.param_groups.0.params must name Module parts"),
])
def test_a_bad_group_is_one_line_when_the_module_is_built(groups, says):
    with pytest.raises(UserError) as error:
        make_module(groups)
    assert says in str(error.value) and "\n" not in str(error.value)


def test_the_config_checks_name_every_bad_group_key():
    module = {"_target_": "orchestra.Module", "forward": "f", "backbone": None, "predictor": None, "optim": None}
    groups = [{"params": "predictor", "fixed_lr": "yes"}, {"params": "head", "lr": 0, "weight_decay": -1, "lrr": 1}]
    assert config_problems({"optim": {"lr": 0.1, "param_groups": groups}, "module": module}) == [
        "optim.param_groups.0.fixed_lr must be true or false, got 'yes'",
        "optim.param_groups.1 has unknown key(s) lrr; use: params, lr, weight_decay, fixed_lr",
        "optim.param_groups.1.params: 'head' is not a part of the Module; its parts: backbone, predictor",
        "optim.param_groups.1.lr must be a positive number, got 0; set e.g. optim.param_groups.1.lr=0.001",
        "optim.param_groups.1.weight_decay must be a number at least 0, got -1; set e.g. "
        "optim.param_groups.1.weight_decay=0",
    ]


def test_an_unknown_part_is_one_line_before_any_job_directory(tmp_path, capsys):
    code = main(["train", "method=simsiam", "optim.param_groups=[{params:predictr,fixed_lr:true}]",
                 f"output_root={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == ["error: optim.param_groups.0.params: 'predictr' is not a part of the Module; "
                                        "its parts: backbone, predictor, projector, simsiam_loss"]
    assert not (tmp_path / "out").exists()
