"""Strategy settings that need no training: DeepSpeed refused on CPU in one line (unless rehearsed), the
learning-rate scaling rule, the SLURM resources derived from the trainer, and the atomic swap of a directory
checkpoint."""

from __future__ import annotations

import pytest
from orchestra_testkit import run_cli

from orchestra.config.compose import compose
from orchestra.distributed.checkpoint_dirs import publish_directory, staging_path
from orchestra.distributed.strategies import check_strategy
from orchestra.errors import UserError
from orchestra.model.lr_scaling import apply_lr_scaling


def test_deepspeed_on_cpu_is_one_line_before_anything_runs(tmp_path):
    done = run_cli(["train", "strategy=deepspeed", f"output_root={tmp_path}"], cwd=tmp_path)
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1, done.stderr
    assert "deepspeed" in done.stderr and "CUDA" in done.stderr and "strategy=fsdp" in done.stderr
    assert "strategy.cpu_rehearsal=true" in done.stderr  # the way to check a DeepSpeed config here anyway
    assert not (tmp_path / "train").exists()  # refused at compose time: no job directory, no process
    cfg = compose(["strategy=deepspeed", "strategy.cpu_rehearsal=true"])
    check_strategy(cfg.strategy, cfg.trainer)  # accepted: test_strategy_deepspeed_cpu.py runs it


def test_deepspeed_stage_must_be_a_zero_stage():
    cfg = compose(["strategy=deepspeed", "trainer=gpu", "strategy.stage=4"])
    with pytest.raises(UserError, match="ZeRO stage"):
        check_strategy(cfg.strategy, cfg.trainer)
    check_strategy(compose(["strategy=deepspeed", "trainer=gpu"]).strategy, cfg.trainer)  # stage 2 on GPU: accepted
    cfg = compose(["strategy=deepspeed", "trainer=gpu", "strategy.stage=two"])
    with pytest.raises(UserError, match="ZeRO stage"):  # not a ValueError traceback
        check_strategy(cfg.strategy, cfg.trainer)


def test_the_old_trainer_strategy_key_is_refused_not_silently_ignored():
    cfg = compose(["+trainer.strategy=ddp"])
    with pytest.raises(UserError, match="strategy=ddp"):
        check_strategy(cfg.strategy, cfg.trainer)


@pytest.mark.parametrize(("rule", "expected"), [("none", 0.005), ("linear", 0.02), ("sqrt", 0.01)])
def test_lr_scaled_to_global_batch_times_accumulation(rule, expected):
    cfg = compose(["data.batch_size=512", "trainer.accumulate_grad_batches=2", f"optim.lr_scaling={rule}",
                   "optim.base_batch_size=256", "optim.lr=0.005"])
    record = apply_lr_scaling(cfg)
    assert record["global_batch"] == 1024 and record["lr"] == pytest.approx(expected)
    assert cfg.module.optim.lr == pytest.approx(expected)  # the Module is built from this copy


def test_more_devices_do_not_change_the_global_batch_or_the_lr():
    """data.batch_size is already the global batch: ranks take slices of it."""
    one = apply_lr_scaling(compose(["optim.lr_scaling=linear"]))
    eight = apply_lr_scaling(compose(["optim.lr_scaling=linear", "trainer.devices=8", "trainer.num_nodes=2",
                                      "strategy=ddp"]))
    assert one == eight


def test_unknown_lr_scaling_rule_is_one_line():
    with pytest.raises(UserError, match="linear, sqrt"):
        apply_lr_scaling(compose(["optim.lr_scaling=cubic"]))


def test_slurm_resources_follow_the_trainer(tmp_path):
    from omegaconf import OmegaConf

    from launch.slurm.submit import build_executor

    cfg = compose(["launcher=slurm", "trainer=gpu", "trainer.devices=4", "trainer.num_nodes=2", "strategy=fsdp"])
    params = build_executor(tmp_path, OmegaConf.to_container(cfg.launcher, resolve=True)).parameters
    assert (params["nodes"], params["ntasks_per_node"], params["gpus_per_node"]) == (2, 4, 4)
    cpu = compose(["launcher=slurm", "trainer.devices=2", "strategy=ddp"])
    params = build_executor(tmp_path, OmegaConf.to_container(cpu.launcher, resolve=True)).parameters
    assert (params["nodes"], params["ntasks_per_node"], "gpus_per_node" in params) == (1, 2, False)


def _write_checkpoint_dir(final, text: str) -> None:
    staging = staging_path(final)
    staging.mkdir(parents=True)
    (staging / "shard").write_text(text)
    publish_directory(staging, final)


def test_directory_checkpoint_is_swapped_whole_and_the_old_one_removed(tmp_path):
    final = tmp_path / "checkpoints" / "last.ckpt"
    final.parent.mkdir()
    final.write_text("a file checkpoint from a DDP run")
    _write_checkpoint_dir(final, "first")
    first = final.resolve()
    assert final.is_symlink() and (final / "shard").read_text() == "first"
    _write_checkpoint_dir(final, "second")
    assert (final / "shard").read_text() == "second" and not first.exists()
    assert sorted(p.name for p in final.parent.iterdir()) == sorted(["last.ckpt", final.resolve().name])
