"""`orchestra eval`: offline linear evaluation of frozen backbones from last.ckpt, written into results.json."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from orchestra_testkit import read_json, run_cli, subprocess_env

from orchestra.evaluation.linear_eval import linear_top1


def test_classifier_separates_separable_features_and_not_shuffled_labels():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(400) % 4
    centres = torch.randn(4, 16, generator=generator) * 3
    features = centres[labels] + torch.randn(400, 16, generator=generator)
    top1, _ = linear_top1(features[:300], labels[:300], features[300:], labels[300:], num_classes=4)
    assert top1 == 1.0
    # Deterministic: zero-initialised full-batch fits and a seeded hold-out give the same choice and number again.
    noisy = features + torch.randn(400, 16, generator=generator) * 4
    first = linear_top1(noisy[:300], labels[:300], noisy[300:], labels[300:], num_classes=4)
    assert 0.3 < first[0] < 1.0
    assert linear_top1(noisy[:300], labels[:300], noisy[300:], labels[300:], num_classes=4) == first
    # With labels unrelated to the features, held-out accuracy falls to about chance (0.25 here).
    shuffled = labels[torch.randperm(400, generator=generator)]
    top1, _ = linear_top1(features[:300], shuffled[:300], features[300:], shuffled[300:], num_classes=4)
    assert top1 < 0.45


def test_eval_of_a_sweep_adds_linear_top1_to_completed_members_and_skips_the_failed(sweep_with_failure, tmp_path):
    sweep_dir = Path(shutil.copytree(sweep_with_failure[0], tmp_path / "copy"))
    completed, failed = sorted(p for p in sweep_dir.iterdir() if (p / "config.yaml").is_file())
    before = read_json(completed / "results.json")
    failed_before = (failed / "results.json").read_text()

    result = run_cli(["eval", str(sweep_dir)], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert any(line.startswith("member 1 (") and "skipped, it is FAILED" in line for line in lines), result.stdout
    assert lines[-1].startswith("evaluated 1 of 2 member(s)")

    after = read_json(completed / "results.json")
    top1 = after["linear_top1"]
    # Far above chance (0.1) and no worse than the raw-pixel kNN floor by more than the split's noise (128 images).
    assert top1 > max(0.5, before["floors"]["raw_pixels/knn_top1"] - 0.1), (top1, before["floors"])
    assert after["linear_eval"]["top1"] == top1
    assert after["linear_eval"]["train_images"] == 256 and after["linear_eval"]["val_images"] == 128
    assert "L-BFGS" in after["evaluation"]["offline_linear"]
    assert {k: after[k] for k in before} == {**before, "evaluation": after["evaluation"]}  # nothing else changed
    assert (failed / "results.json").read_text() == failed_before

    # The report shows the offline number beside the online ones.
    report = run_cli(["report", str(sweep_dir)], cwd=tmp_path, env=subprocess_env(COLUMNS="220"))
    assert report.returncode == 0, report.stderr[-3000:]
    assert "linear top-1" in report.stdout
    row = next(line for line in report.stdout.splitlines() if "COMPLETED" in line and "│" in line)
    assert f"{top1:.4f}" in row


def test_eval_refuses_a_failed_member_and_a_directory_that_is_no_run(sweep_with_failure, tmp_path):
    failed = sorted(p for p in sweep_with_failure[0].iterdir() if (p / "config.yaml").is_file())[1]
    for target, expected in ((failed, "is FAILED"), (tmp_path, "neither a sweep directory")):
        result = run_cli(["eval", str(target)], cwd=tmp_path)
        assert result.returncode == 2, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr


def test_eval_of_a_member_with_a_truncated_checkpoint_is_one_line(sweep_with_failure, tmp_path):
    sweep_dir = Path(shutil.copytree(sweep_with_failure[0], tmp_path / "copy"))
    completed = sorted(p for p in sweep_dir.iterdir() if (p / "config.yaml").is_file())[0]
    checkpoint = completed / "checkpoints" / "last.ckpt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])  # a copy cut short, as after a full disk
    before = (completed / "results.json").read_text()

    result = run_cli(["eval", str(sweep_dir)], cwd=tmp_path)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    line = next(ln for ln in result.stdout.splitlines() if "cannot be read" in ln)
    assert str(checkpoint) in line and "orchestra resume" in line
    assert (completed / "results.json").read_text() == before
