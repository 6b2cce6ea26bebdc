"""Every shipped method trains end to end through `orchestra train` and leaves a complete job directory."""

from __future__ import annotations

import math

import pytest
import torch
from orchestra_testkit import read_json, tiny_overrides, train_in_process

METHODS = ("simclr", "nnclr", "byol", "vicreg", "barlow_twins", "supervised", "mocov2", "mocov3", "simsiam", "dino",
           "swav", "mae", "ijepa")
STEPS_PER_EPOCH = 256 // 64  # TINY: train_limit=256, batch_size=64, drop_last


def _is_accuracy(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0


@pytest.mark.parametrize("method", METHODS)
def test_one_epoch_of_each_method_writes_complete_results(tmp_path, method):
    job_dir = train_in_process(tiny_overrides(tmp_path, method))
    results = read_json(job_dir / "results.json")

    assert results["state"] == "COMPLETED"
    assert results["attempts"] == 1
    assert results["method"] == method
    assert "error" not in results
    assert results["wall_time_s"] > 0

    metrics = results["metrics"]
    assert _is_accuracy(metrics["knn/top1"]), metrics
    assert _is_accuracy(metrics["probe/top1"]), metrics
    assert math.isfinite(metrics["train/loss"])

    # One validation per epoch; the reported metrics are the last validation's, not a maximum.
    assert len(results["history"]) == 1
    assert results["history"][0]["epoch"] == 0
    assert results["history"][0]["step"] == STEPS_PER_EPOCH
    assert results["history"][-1]["metrics"] == metrics

    # The no-training floors sit beside the metrics so a report can show them.
    assert set(results["floors"]) == {"raw_pixels/knn_top1", "random_init/knn_top1"}
    assert all(_is_accuracy(v) for v in results["floors"].values()), results["floors"]

    assert (job_dir / "config.yaml").is_file()
    checkpoint = torch.load(job_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == STEPS_PER_EPOCH
    # Probe and kNN evaluators are real submodules, so the probe's weights travel with the checkpoint.
    assert any(key.startswith("evaluators.probe.") for key in checkpoint["state_dict"])

    if method == "nnclr":
        state = checkpoint["state_dict"]
        queue = state["queues.nnclr_support_set.data"]
        filled = int(state["queues.nnclr_support_set.filled"])
        # Each step enqueues the first view's projections of its 64 images; the queue (512) is not yet full.
        assert filled > 0
        assert filled == STEPS_PER_EPOCH * 64
        assert int(state["queues.nnclr_support_set.pointer"]) == filled
        assert queue.shape == (512, 32)
        assert queue[:filled].abs().sum(dim=1).gt(0).all()  # every filled row holds a real projection
        assert queue[filled:].abs().sum() == 0

    if method == "byol":
        # The EMA teacher is model state too (BYOL evaluates it; resume needs it): it is saved, and it lags the
        # student (tau near 0.996), so the two weights differ after the first steps.
        state = checkpoint["state_dict"]
        teacher_keys = [k for k in state if k.startswith("backbone.teacher.") and k.endswith("weight")]
        assert teacher_keys
        for key in teacher_keys:
            assert not torch.equal(state[key], state[key.replace(".teacher.", ".student.")]), key


@pytest.mark.parametrize("method", ["simclr", "byol"])
def test_bf16_weights_train_and_evaluate(tmp_path, method):
    """Weights and inputs in bf16 (trainer.precision=bf16-true), the dtypes DeepSpeed's bf16 gives on a GPU: the kNN
    bank pass must convert its images like validation does (it fed float32 images to bf16 weights and crashed)."""
    job_dir = train_in_process(tiny_overrides(tmp_path, method, "trainer.precision=bf16-true"))
    results = read_json(job_dir / "results.json")
    assert results["state"] == "COMPLETED", results.get("error")
    assert results["metrics"]["knn/top1"] > 0.3 and math.isfinite(results["metrics"]["train/loss"])  # chance: 0.1
