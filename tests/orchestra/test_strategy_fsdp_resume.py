"""strategy=fsdp (FSDP2 ``fully_shard`` through Lightning's ModelParallelStrategy) on 2 gloo ranks: SimCLR and BYOL
train, save a sharded checkpoint directory, and a run stopped after epoch 1 resumes to the very state of an
uninterrupted run.

BatchNorm statistics are global here (strategy.sync_batchnorm=true): a distributed checkpoint stores one copy of an
unsharded buffer, so per-rank statistics could not all be restored; global ones are the same on every rank.
"""

from __future__ import annotations

import pytest
import torch
from multi_rank_jobs import STOPS, assert_interrupted_ranks_resumed, initial_state, outputs, resume_order, start_ranks
from omegaconf import open_dict
from orchestra_testkit import read_json, subprocess_env, tiny_overrides
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from orchestra.config.compose import compose
from orchestra.jobstate.job_dir import prepare_job_dir

FSDP = ["trainer.devices=2", "strategy=fsdp", "strategy.sync_batchnorm=true", "trainer.max_epochs=2",
        "trainer.limit_train_batches=2", "data.train_limit=192", "data.val_limit=64"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    dirs = {}
    runs = [("simclr", "stopped"), ("simclr", "signalled"), ("simclr", "straight"), ("byol", "stopped"),
            ("byol", "straight"), ("mae", "stopped"), ("mae", "straight")]  # mae: vit_tiny, blocks sharded one by one
    for method, kind in runs:
        cfg = compose(tiny_overrides(root, method, *FSDP))
        if kind in STOPS:
            with open_dict(cfg):
                cfg.callbacks.stop = {**STOPS[kind], "marker": str(root / f"{method}-{kind}.marker")}
        dirs[method, kind] = root / f"{method}-{kind}"
        prepare_job_dir(dirs[method, kind], cfg)
    logs = outputs(start_ranks(resume_order(dirs), 2, subprocess_env()))
    for directory in dirs.values():
        assert read_json(directory / "results.json")["state"] == "COMPLETED", "\n".join(logs)[-4000:]
    assert_interrupted_ranks_resumed(logs, "AtomicModelParallelStrategy")  # the test below compares the states
    return dirs


def _sharded_state(job_dir, tmp_path) -> dict[str, torch.Tensor]:
    last = job_dir / "checkpoints" / "last.ckpt"
    assert last.is_dir() and (last / ".metadata").is_file() and (last / "meta.pt").is_file()
    assert not any(p.name.endswith(".partial") for p in last.parent.iterdir())  # staging was published, not left
    merged = tmp_path / f"{job_dir.name}.pt"
    dcp_to_torch_save(last, merged)
    return torch.load(merged, weights_only=False)["state_dict"]


@pytest.mark.parametrize(("method", "kind"),
                         [("simclr", "stopped"), ("byol", "stopped"), ("simclr", "signalled"), ("mae", "stopped")])
def test_fsdp_member_resumed_from_sharded_checkpoint_equals_uninterrupted(runs, method, kind, tmp_path):
    """stopped: both ranks stop after epoch 1. signalled: only rank 1 gets SIGUSR2 mid-epoch; both ranks must agree
    to save at the same batch (the save is collective) and resume mid-epoch.
    """
    stopped = read_json(runs[method, kind] / "results.json")
    straight = read_json(runs[method, "straight"] / "results.json")
    assert stopped["attempts"] == 2 and straight["attempts"] == 1
    assert [r["step"] for r in stopped["history"]] == [r["step"] for r in straight["history"]] == [2, 4]
    worst_metric = 0.0
    for resumed, reference in zip(stopped["history"], straight["history"], strict=True):
        assert resumed["metrics"].keys() == reference["metrics"].keys()
        for key, value in reference["metrics"].items():
            worst_metric = max(worst_metric, abs(resumed["metrics"][key] - value))
    a = _sharded_state(runs[method, kind], tmp_path)
    b = _sharded_state(runs[method, "straight"], tmp_path)
    assert a.keys() == b.keys()
    worst_parameter = max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())
    print(f"{method} fsdp resume ({kind}): max metric difference {worst_metric:.1e}, max parameter difference "
          f"{worst_parameter:.1e}; metrics {straight['metrics']}")
    assert worst_metric <= 1e-6 and worst_parameter <= 1e-6


def test_byol_teacher_follows_its_student_shard_by_shard(runs, tmp_path):
    """Teacher and student are sharded alike, so the EMA pairs local shards: both halves of every teacher tensor
    (rank 0's rows and rank 1's rows) must have moved from the initial weights, towards the student.
    """
    state = _sharded_state(runs["byol", "straight"], tmp_path)
    initial = initial_state(runs["byol", "straight"])
    teacher_keys = [k for k in state if ".teacher." in k and state[k].is_floating_point() and "running" not in k]
    assert teacher_keys
    for key in teacher_keys:
        student = key.replace(".teacher.", ".student.")
        for half in torch.tensor_split(torch.arange(state[key].shape[0]), 2):
            moved = (state[key][half] - initial[key][half]).abs().max().item()
            towards = (state[student][half] - initial[key][half]).abs().max().item()
            assert 0 < moved < towards, (key, moved, towards)
