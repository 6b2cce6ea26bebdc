"""A sweep composes once per choice of config groups and renders members through a shared config; what each job dir
gets must be exactly what a full Hydra compose of that member gives, and bad members the same one-line errors."""

from __future__ import annotations

import pytest

from orchestra.config.compose import compose, to_yaml
from orchestra.config.members import MemberConfigs
from orchestra.config.rendering import config_yaml
from orchestra.errors import UserError

MEMBERS = [
    ["method=simclr", "seed=3", "trainer.max_epochs=2"],
    ["method=byol", "++module.hparams.proj_dim=7", "+foo.bar=1", "optim={lr:0.1,name:sgd}"],  # own deep copy
    ["+experiment=seed_byol", "seed=5"],
    ["method=vicreg", "~callbacks.knn", "data.batch_size=32"],
    ["launcher=slurm", "launcher.partition=x", "+logger.api_key=abc"],  # secret redacted in both
    ["method=simclr", "seed=4", "optim.lr=${optim.weight_decay}"],  # a member's value is itself an interpolation
    ["method=simclr", "module.hparams.proj_dim=64"],  # read by the projector's interpolations
    ["method=simclr", "seed=3", "trainer.max_epochs=2"],  # the shared working config was restored after member 0
]


def _reference(overrides: list[str], job_dir: str) -> str:
    cfg = compose(overrides)
    cfg.job_dir = job_dir
    return to_yaml(cfg)


def test_every_member_renders_exactly_as_a_full_compose():
    configs = MemberConfigs(MEMBERS)
    for index, overrides in enumerate(MEMBERS):
        rendered = config_yaml(configs.resolved(index, job_dir=f"/sweep/{index:03d}"))
        assert rendered == _reference(overrides, f"/sweep/{index:03d}"), overrides
    assert "abc" not in config_yaml(configs.resolved(4, job_dir="/x"))


@pytest.mark.parametrize("bad", [
    ["method=simclr", "module.hparams.nope=1"],
    ["method=byol", "nokey=3"],
    ["+seed=4"],
    ["~nokey"],
    ["method=nosuchmethod"],
])
def test_bad_members_get_the_same_one_line_as_a_full_compose(bad):
    with pytest.raises(UserError) as full:
        compose(bad)
    with pytest.raises(UserError) as shared:
        MemberConfigs([["seed=1"], bad])  # a good member first: the error names the bad one all the same
    assert str(shared.value) == str(full.value) and "\n" not in str(shared.value)


def test_a_required_value_left_missing_is_one_line():
    with pytest.raises(UserError, match=r"config value 'optim.lr' is required"):
        MemberConfigs([["optim.lr=???"]]).resolved(0, job_dir="/x")
