"""The ViT optimizer options: ``optim.no_decay`` groups, the ``optim.weight_decay_end`` cosine schedule and
Lightning's ``gradient_clip_val`` on orchestra.Module, read from real Trainer runs of a few steps."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from orchestra import Module
from orchestra.callbacks import OnlineProbe
from orchestra.config.validate import config_problems
from orchestra.errors import UserError

STEPS_PER_EPOCH, EPOCHS, WD, WD_END, PROBE_LR = 4, 2, 0.04, 0.4, 0.02


class Tokens(nn.Module):
    """A ViT in miniature: tokens, position embedding, a norm and a linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.pos_embed = nn.Parameter(torch.randn(1, 2, 4) * 0.02)
        self.norm = nn.LayerNorm(4)
        self.proj = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([self.cls_token.expand(len(x), -1, -1), x[:, None]], 1) + self.pos_embed
        return self.proj(self.norm(tokens)[:, 0])


def regression_forward(self: Module, batch: dict, stage: str) -> dict:
    out = {"embedding": self.backbone(batch["image"]), "label": batch["label"]}
    if stage == "train":
        out["loss"] = (self.predictor(self.projector(out["embedding"])) - batch["image"]).pow(2).mean()
    return out


class Points(Dataset):
    def __len__(self) -> int:
        return 8 * STEPS_PER_EPOCH

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        return {"image": torch.randn(4, generator=g) * 10, "label": i % 3}


def make_module(**optim: object) -> Module:
    torch.manual_seed(0)
    return Module(regression_forward, backbone=Tokens(), projector=nn.Linear(6, 5), predictor=nn.Linear(5, 4),
                  optim={"name": "adamw", "lr": 0.01, "weight_decay": WD, "warmup_epochs": 0, **optim})


class Record(pl.Callback):
    """Each group's weight decay as the step uses it (read inside the step, after the Module set it), the gradient
    norm before Lightning clips it and after (still there at batch end: Lightning zeroes at the next step)."""

    def __init__(self) -> None:
        self.decays: dict[int, list[float]] = {}
        self.before: list[float] = []
        self.after: list[float] = []

    def on_before_optimizer_step(self, trainer: pl.Trainer, module: pl.LightningModule, optimizer) -> None:
        self.decays[trainer.global_step] = [g["weight_decay"] for g in optimizer.param_groups]
        self.before.append(self.norm(module))

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: object) -> None:
        self.after.append(self.norm(module))

    @staticmethod
    def norm(module: nn.Module) -> float:
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


class StopMidEpoch(pl.Callback):
    def __init__(self, path: Path, step: int) -> None:
        self.path, self.step = path, step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)
            trainer.should_stop = True


def fit(module: Module, *callbacks: pl.Callback, ckpt_path: Path | None = None, **trainer: object) -> pl.Trainer:
    run = pl.Trainer(accelerator="cpu", max_epochs=EPOCHS, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                     num_sanity_val_steps=0, log_every_n_steps=1,
                     callbacks=[OnlineProbe(num_classes=3, input_dim=6, lr=PROBE_LR), *callbacks], **trainer)
    run.fit(module, DataLoader(Points(), batch_size=8), ckpt_path=ckpt_path)
    return run


def names(module: Module, group: dict) -> set[str]:
    by_id = {id(p): n for n, p in module.named_parameters()}
    return {by_id[id(p)] for p in group["params"]}


ALL = {"backbone.cls_token", "backbone.pos_embed", "backbone.norm.weight", "backbone.norm.bias", "backbone.proj.weight",
       "backbone.proj.bias", "projector.weight", "projector.bias", "predictor.weight", "predictor.bias"}
EXEMPT = {"backbone.cls_token", "backbone.pos_embed", "backbone.norm.weight", "backbone.norm.bias",
          "backbone.proj.bias", "projector.bias", "predictor.bias"}


def test_off_the_groups_are_exactly_the_old_ones():
    trainer = fit(make_module(), max_steps=1)
    module, groups = trainer.lightning_module, trainer.optimizers[0].param_groups
    assert len(groups) == 2 and groups[1]["evaluator"] and "no_decay" not in groups[0]
    assert names(module, groups[0]) == ALL and groups[0]["weight_decay"] == WD


def test_no_decay_takes_exactly_the_1d_and_named_parameters_and_composes_with_param_groups():
    module = make_module(no_decay=True, param_groups=[{"params": "projector", "lr": 0.03}])
    trainer = fit(module, max_steps=1)
    groups = trainer.optimizers[0].param_groups
    assert [g.get("name") for g in groups] == [None, "projector", "no_decay", "projector/no_decay", None]
    main, projector, main_exempt, projector_exempt, probe = groups
    assert names(module, main) == {"backbone.proj.weight", "predictor.weight"} and main["weight_decay"] == WD
    assert names(module, projector) == {"projector.weight"} and projector["initial_lr"] == pytest.approx(0.03)
    assert names(module, main_exempt) | names(module, projector_exempt) == EXEMPT
    assert names(module, projector_exempt) == {"projector.bias"}
    assert projector_exempt["initial_lr"] == pytest.approx(0.03)
    assert main_exempt["weight_decay"] == projector_exempt["weight_decay"] == 0.0
    assert probe["evaluator"] and probe["initial_lr"] == PROBE_LR
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))  # no parameter in two groups
    # the decaying parameters are exactly those of the run without the option, less the exempt ones
    off = fit(make_module(param_groups=[{"params": "projector", "lr": 0.03}]), max_steps=1)
    old = off.optimizers[0].param_groups
    assert names(module, main) == names(off.lightning_module, old[0]) - EXEMPT
    assert names(module, projector) == names(off.lightning_module, old[1]) - EXEMPT


def test_a_listed_rule_takes_that_parameter_only_and_a_rule_matching_nothing_is_one_line():
    module = make_module(no_decay=["pos_embed", "backbone.norm.*"])
    groups = fit(module, max_steps=1).optimizers[0].param_groups
    assert names(module, groups[1]) == {"backbone.pos_embed", "backbone.norm.weight", "backbone.norm.bias"}
    with pytest.raises(UserError) as error:
        fit(make_module(no_decay=["1d", "pos_embd"]), max_steps=1)
    assert "optim.no_decay: 'pos_embd' matches no trainable parameter" in str(error.value)
    assert "\n" not in str(error.value)


def cosine(step: int) -> float:
    return WD_END + (WD - WD_END) * 0.5 * (1 + math.cos(math.pi * step / (STEPS_PER_EPOCH * EPOCHS)))


@pytest.fixture(scope="module")
def scheduled() -> Record:
    record = Record()
    trainer = fit(make_module(no_decay=True, weight_decay_end=WD_END,
                              param_groups=[{"params": "predictor", "weight_decay": 0.01}]), record)
    record.logged = float(trainer.callback_metrics["optim/weight_decay"])  # the last step's value
    return record


def test_the_weight_decay_follows_the_cosine_on_the_decaying_groups_only(scheduled):
    assert sorted(scheduled.decays) == list(range(STEPS_PER_EPOCH * EPOCHS))
    for step, (main, predictor, *exempt, probe) in scheduled.decays.items():
        assert main == pytest.approx(cosine(step), abs=1e-12), step
        assert predictor == 0.01 and exempt == [0.0, 0.0] and probe == 0.0, step  # its own, no-decay, evaluator
    assert scheduled.decays[0][0] == pytest.approx(WD) and scheduled.decays[7][0] > 0.38
    assert scheduled.logged == pytest.approx(cosine(7))


def test_a_mid_epoch_resume_continues_the_same_weight_decays(tmp_path, scheduled):
    options = {"no_decay": True, "weight_decay_end": WD_END,
               "param_groups": [{"params": "predictor", "weight_decay": 0.01}]}
    fit(make_module(**options), StopMidEpoch(tmp_path / "mid.ckpt", step=6))
    record = Record()
    fit(make_module(**options), record, ckpt_path=tmp_path / "mid.ckpt")
    assert sorted(record.decays) == [6, 7]
    assert record.decays == {step: scheduled.decays[step] for step in (6, 7)}


def test_gradient_clip_val_bounds_the_gradient_norm_of_each_step():
    record = Record()
    fit(make_module(), record, max_steps=3, gradient_clip_val=0.05)
    assert min(record.before) > 0.5  # the data make large gradients, so clipping has something to do
    assert record.after == pytest.approx([0.05] * 3, rel=1e-4)


@pytest.mark.parametrize(("optim", "says"), [
    ({"no_decay": "1d"}, "optim.no_decay must be true, false or a list of rules, got '1d'"),
    ({"no_decay": [1]}, "optim.no_decay must be true, false or a list of rules, got [1]"),
    ({"weight_decay_end": -0.1}, "optim.weight_decay_end must be null (constant) or a number at least 0, got -0.1"),
    ({"weight_decay_end": "high"}, "optim.weight_decay_end must be null (constant) or a number at least 0, got 'high'"),
])
def test_a_bad_value_is_one_line(optim, says):
    problems = config_problems({"optim": {"lr": 0.1, **optim}})
    assert len(problems) == 1 and problems[0].startswith(says) and "\n" not in problems[0]


def test_good_values_pass_the_checks():
    for optim in ({"no_decay": True, "weight_decay_end": 0.4}, {"no_decay": ["1d", "pos_embed"]},
                  {"no_decay": False, "weight_decay_end": None}):
        assert config_problems({"optim": {"lr": 0.1, **optim}}) == []
