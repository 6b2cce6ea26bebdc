"""The resume contract: a job killed after a checkpoint and started again in its directory ends exactly where an
uninterrupted job ends.

The interruption is a callback that raises at the start of epoch 2 (after epoch 1's validation wrote last.ckpt),
as a preempted process would die. It does not change max_epochs: the warm-up/cosine learning-rate schedule and
BYOL's EMA schedule are functions of the total step count, so a run first launched with max_epochs=1 and then
extended to 2 legitimately trains epoch 1 differently (BYOL's teacher moves on another schedule) and cannot be
the reference for a preempted max_epochs=2 job.
"""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from orchestra_testkit import SimulatedPreemption, only_job_dir, read_json, tiny_overrides

from orchestra.cli import main
from orchestra.job.body import run_job

PREEMPT = "+callbacks.preempt._target_=orchestra_testkit.PreemptAfterEpoch"


def _assert_same_metrics(resumed: dict, reference: dict) -> None:
    assert resumed.keys() == reference.keys()
    for key in ("knn/top1", "probe/top1", "train/loss"):
        assert resumed[key] == pytest.approx(reference[key], abs=1e-6), key
    for key in resumed:
        assert resumed[key] == pytest.approx(reference[key], abs=1e-6), key


@pytest.mark.parametrize("method", ["simclr", "byol"])  # byol: the EMA teacher must come back from the checkpoint
def test_preempted_job_resumes_to_the_same_result_as_an_uninterrupted_one(tmp_path, capsys, method,
                                                                          uninterrupted_results):
    reference = uninterrupted_results(method, "trainer.max_epochs=2")  # shared with other resume tests (conftest)
    assert reference["state"] == "COMPLETED" and len(reference["history"]) == 2

    # First attempt: killed after epoch 1, with its checkpoint on disk and the failure recorded.
    with pytest.raises(SimulatedPreemption):
        main(["train", *tiny_overrides(tmp_path / "preempted", method, "trainer.max_epochs=2", PREEMPT)])
    job_dir = only_job_dir(tmp_path / "preempted")
    first = read_json(job_dir / "results.json")
    assert first["state"] == "FAILED"
    assert "SimulatedPreemption" in first["error"]
    assert first["attempts"] == 1
    assert (job_dir / "checkpoints" / "last.ckpt").is_file()

    # The requeued process runs the same job directory again (minus the test's kill switch).
    config = OmegaConf.load(job_dir / "config.yaml")
    del config.callbacks["preempt"]
    (job_dir / "config.yaml").write_text(OmegaConf.to_yaml(config))
    capsys.readouterr()
    run_job(job_dir)
    log = capsys.readouterr().out

    # It really continued from last.ckpt: only epoch 2 was trained and validated in this attempt. (Training both
    # epochs again from scratch would also reproduce the reference numbers, so the numbers alone cannot tell.)
    assert f"resuming from {job_dir / 'checkpoints' / 'last.ckpt'}" in log
    assert "epoch 2/2" in log
    assert "epoch 1/2" not in log

    resumed = read_json(job_dir / "results.json")
    assert resumed["state"] == "COMPLETED"
    assert resumed["attempts"] == 2
    assert "error" not in resumed
    assert resumed["wall_time_s"] >= first["wall_time_s"]  # wall time keeps counting across attempts
    assert resumed["floors"] == reference["floors"]  # kept from the first attempt, same numbers

    _assert_same_metrics(resumed["metrics"], reference["metrics"])
    # The history carries over through the checkpoint: epoch 1 from the first attempt, epoch 2 from the second.
    assert [(r["epoch"], r["step"]) for r in resumed["history"]] == [(r["epoch"], r["step"])
                                                                    for r in reference["history"]]
    for got, want in zip(resumed["history"], reference["history"], strict=True):
        _assert_same_metrics(got["metrics"], want["metrics"])
