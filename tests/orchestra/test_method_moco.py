"""MoCo v2 and v3 end to end through `orchestra train` on the shipped digits: they train, their kNN is above chance,
a signal mid-epoch resumes to exactly the uninterrupted run (momentum encoder and key queue included), and a key
queue shorter than the global batch is refused in one line."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from orchestra_testkit import (
    TINY,
    cli_command,
    drop_callback,
    only_job_dir,
    read_json,
    run_cli,
    signal_at,
    train_in_process,
    train_preempted,
)

from orchestra.job.body import run_job

METHODS = ("mocov2", "mocov3")
# Narrow heads; the v2 queue (128 rows by default here) takes two steps of 64 keys to fill and then wraps around.
SMALL = {
    "mocov2": ["module.hparams.proj_hidden_dim=64", "module.hparams.projection_dim=32"],
    "mocov3": ["module.hparams.proj_hidden_dim=64", "module.hparams.pred_hidden_dim=64",
               "module.hparams.projection_dim=32"],
}
STEPS_PER_EPOCH = 256 // 64  # TINY: train_limit=256, batch_size=64


def overrides(output_root: Path, method: str, *extra: str, queue: int = 128) -> list[str]:
    small = [*SMALL[method], *([f"module.hparams.queue_size={queue}"] if method == "mocov2" else [])]
    return [f"method={method}", *TINY, *small, f"output_root={output_root}", *extra]


def _state(job_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(job_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.parametrize("method", METHODS)
def test_trains_end_to_end_with_knn_above_chance(tmp_path, method):
    job_dir = train_in_process(overrides(tmp_path, method))
    results = read_json(job_dir / "results.json")
    assert results["state"] == "COMPLETED" and results["method"] == method
    assert results["steps"] == STEPS_PER_EPOCH
    metrics = results["metrics"]
    assert math.isfinite(metrics["train/loss"])
    assert metrics["knn/top1"] > 0.3, metrics  # ten classes: chance is 0.1
    state = _state(job_dir)
    assert any(".teacher." in name for name in state)  # the momentum encoder travels with the checkpoint
    if method == "mocov2":
        assert int(state["queue.filled"]) == 128 and int(state["queue.pointer"]) == (4 * 64) % 128


@pytest.mark.parametrize("method", METHODS)
def test_a_signal_mid_epoch_resumes_exactly(tmp_path, capsys, method):
    # 8 steps of 64 keys through 320 rows: the cut comes after 5 steps (the queue just full), so the final queue still
    # holds keys enqueued before the signal, which only a restored queue can reproduce.
    two_epochs = ("trainer.max_epochs=2",)
    whole = train_in_process(overrides(tmp_path / "whole", method, *two_epochs, queue=320))
    reference = read_json(whole / "results.json")

    job_dir = train_preempted(overrides(tmp_path / "cut", method, *two_epochs, *signal_at(epoch=1, batch=1),
                                        queue=320))
    assert "at epoch 1 after 1 batches" in capsys.readouterr().out
    drop_callback(job_dir)
    resumed = run_job(job_dir)

    assert resumed["state"] == "COMPLETED" and resumed["attempts"] == 2
    assert [r["step"] for r in resumed["history"]] == [r["step"] for r in reference["history"]]
    for key, value in reference["metrics"].items():
        assert resumed["metrics"][key] == pytest.approx(value, abs=1e-6), key
    # Every tensor of the final state, the momentum encoder and the queue's rows, pointer and fill among them.
    want, got = _state(whole), _state(job_dir)
    assert set(got) == set(want)
    for name, value in want.items():
        torch.testing.assert_close(got[name], value, rtol=0, atol=1e-6, msg=name)
    if method == "mocov2":
        assert int(got["queue.filled"]) == 320 and int(got["queue.pointer"]) == (8 * 64) % 320  # wrapped around


def test_a_queue_shorter_than_the_global_batch_is_refused_in_one_line(tmp_path):
    assert cli_command()  # the installed console script, as a user runs it
    result = run_cli(["train", *overrides(tmp_path, "mocov2", queue=32)], cwd=tmp_path)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["error: mocov2_forward: the key queue holds 32 keys but every step enqueues 64 (the global "
                     "batch); set module.hparams.queue_size to at least 64 (the paper: 65536)"], result.stderr
    assert read_json(only_job_dir(tmp_path) / "results.json")["state"] == "FAILED"
