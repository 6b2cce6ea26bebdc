"""``orchestra train method=simsiam`` end to end on the shipped digits: it learns (kNN and probe above chance), its
predictor keeps the scaled base lr to the last step while the rest decays, and a signal mid-epoch resumes exactly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from orchestra_testkit import TINY, drop_callback, read_json, signal_at, train_in_process, train_preempted

from orchestra.job.body import run_job

SMALL_HEADS = ["module.hparams.proj_hidden_dim=64", "module.hparams.projection_dim=32",
               "module.hparams.pred_hidden_dim=16"]
# Two epochs of 4 steps; linear scaling makes the predictor's fixed rate 0.005 x 64/256.
SCALED_LR = 0.005 * 64 / 256
CHANCE = 0.1  # ten digit classes


def overrides(output_root: Path, *extra: str) -> list[str]:
    return ["method=simsiam", *TINY, *SMALL_HEADS, "trainer.max_epochs=2", "optim.lr_scaling=linear",
            f"output_root={output_root}", *extra]


def optimizer_groups(job_dir: Path) -> list[dict]:
    checkpoint = torch.load(job_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return [{k: v for k, v in g.items() if k != "params"} for g in checkpoint["optimizer_states"][0]["param_groups"]]


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    return train_in_process(overrides(tmp_path_factory.mktemp("simsiam") / "whole"))


def test_simsiam_trains_above_chance_with_a_fixed_predictor_lr(whole):
    results = read_json(whole / "results.json")
    assert results["state"] == "COMPLETED" and results["steps"] == 8
    metrics = results["metrics"]
    print("simsiam tiny:", metrics, "untrained floors:", results.get("floors"))
    assert metrics["knn/top1"] > 2 * CHANCE and metrics["probe/top1"] > CHANCE
    assert results["optim"]["param_groups"] == [{"params": "predictor", "lr": pytest.approx(SCALED_LR),
                                                 "fixed_lr": True}]
    main_group, predictor, probe = optimizer_groups(whole)
    assert predictor["name"] == "predictor" and predictor["fixed_lr"] and predictor["lr"] == pytest.approx(SCALED_LR)
    assert main_group["lr"] == pytest.approx(0.0, abs=1e-12)  # the rest ran the cosine to its end
    assert probe["evaluator"] and probe["lr"] == pytest.approx(0.01)


def test_a_signal_mid_epoch_resumes_exactly(whole, tmp_path):
    reference = read_json(whole / "results.json")
    job_dir = train_preempted(overrides(tmp_path / "cut", *signal_at(epoch=1, batch=1)))
    assert read_json(job_dir / "results.json")["state"] == "PREEMPTED"
    # saved one batch into epoch 1: the main group has decayed, the predictor has not
    main_group, predictor, _ = optimizer_groups(job_dir)
    assert 0 < main_group["lr"] < SCALED_LR and predictor["lr"] == pytest.approx(SCALED_LR)

    drop_callback(job_dir)
    resumed = run_job(job_dir)

    assert resumed["state"] == "COMPLETED" and resumed["attempts"] == 2 and resumed["steps"] == reference["steps"]
    assert [r["step"] for r in resumed["history"]] == [r["step"] for r in reference["history"]]
    for key, value in reference["metrics"].items():
        assert resumed["metrics"][key] == pytest.approx(value, abs=1e-6), key
    assert optimizer_groups(job_dir) == optimizer_groups(whole)
