"""``orchestra train method=ijepa backbone=vit_tiny`` end to end on the shipped digits: it completes with finite
metrics, a run cut mid-epoch resumes to exactly the uninterrupted one (blocks redrawn from seed, epoch and image; the
EMA target encoder restored), a CNN backbone is refused in one line, and the paper's recipe validates."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from orchestra_testkit import TINY, drop_callback, read_json, signal_at, train_in_process, train_preempted

from orchestra.cli import main
from orchestra.config.compose import compose
from orchestra.config.validate import config_problems, validation_view
from orchestra.job.body import run_job


def overrides(output_root: Path, *extra: str) -> list[str]:
    return ["method=ijepa", "backbone=vit_tiny", *TINY, "trainer.max_epochs=2", f"output_root={output_root}", *extra]


def checkpoint(job_dir: Path) -> dict:
    return torch.load(job_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    return train_in_process(overrides(tmp_path_factory.mktemp("ijepa") / "whole"))


def test_ijepa_on_vit_tiny_completes_with_finite_metrics(whole):
    results = read_json(whole / "results.json")
    assert results["state"] == "COMPLETED" and results["steps"] == 8
    metrics = results["metrics"]
    print("ijepa tiny:", metrics, "untrained floors:", results.get("floors"))
    assert all(math.isfinite(metrics[key]) for key in ("knn/top1", "probe/top1", "train/loss"))
    state = checkpoint(whole)["state_dict"]
    # the target encoder moved by EMA, and is not the student
    assert not torch.equal(state["backbone.teacher.patch_embed.weight"], state["backbone.student.patch_embed.weight"])


def test_a_signal_mid_epoch_resumes_exactly(whole, tmp_path):
    reference = read_json(whole / "results.json")
    job_dir = train_preempted(overrides(tmp_path / "cut", *signal_at(epoch=1, batch=1)))
    drop_callback(job_dir)
    resumed = run_job(job_dir)

    assert resumed["state"] == "COMPLETED" and resumed["attempts"] == 2 and resumed["steps"] == reference["steps"]
    for key, value in reference["metrics"].items():
        assert resumed["metrics"][key] == pytest.approx(value, abs=1e-6), key
    want, got = checkpoint(whole)["state_dict"], checkpoint(job_dir)["state_dict"]
    compared = [name for name in want if name.startswith(("backbone.", "predictor."))]
    assert any(name.startswith("backbone.teacher.") for name in compared)
    for name in compared:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6, msg=name)


def test_ijepa_with_a_cnn_backbone_is_one_line(tmp_path, capsys):
    code = main(["train", "method=ijepa", "backbone=small_cnn", *TINY, f"output_root={tmp_path}"])
    assert code != 0
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert errors[-1].startswith("error: ijepa_forward needs a ViT backbone"), errors
    assert sum("ijepa_forward" in line for line in errors) == 1


def test_the_papers_recipe_validates():
    cfg = compose(["+experiment=ref_ijepa"])
    assert config_problems(validation_view(cfg)) == []
    assert cfg.optim.weight_decay_end == 0.4 and cfg.data.batch_size == 2048 and cfg.trainer.max_epochs == 300
    assert cfg.module.hparams.pred_dim == 384 and cfg.backbone.patch_size == 16
