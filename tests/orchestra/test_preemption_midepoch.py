"""A signal in the middle of an epoch (SIGUSR2 from submitit, SIGTERM from `scontrol requeue`) ends the job at the
next batch boundary with last.ckpt saved, including the loader's position; the restarted job continues with the
next batch and ends exactly where an uninterrupted job ends.

Numbers alone could not tell a mid-epoch resume from one that replays or skips the rest of the epoch, since both
would still finish; but either would change the step count and the final metrics, which is what is compared.
"""

from __future__ import annotations

import signal

import pytest
from orchestra_testkit import drop_callback, read_json, signal_at, tiny_overrides, train_in_process, train_preempted

from orchestra.job.body import run_job


@pytest.mark.parametrize("signum", [signal.SIGUSR2, signal.SIGTERM], ids=["SIGUSR2", "SIGTERM"])
def test_signal_mid_epoch_checkpoints_and_resumes_exactly(tmp_path, capsys, signum):
    method_args = ("trainer.max_epochs=2",)
    reference = read_json(train_in_process(tiny_overrides(tmp_path / "whole", "simclr", *method_args))
                          / "results.json")

    job_dir = train_preempted(tiny_overrides(tmp_path / "cut", "simclr", *method_args, *signal_at(1, 1, signum)))
    log = capsys.readouterr().out
    assert "saved" in log and "at epoch 1 after 1 batches" in log  # saved before the batch it interrupted
    first = read_json(job_dir / "results.json")
    assert first["state"] == "PREEMPTED" and first["attempts"] == 1

    drop_callback(job_dir)
    resumed = run_job(job_dir)

    assert resumed["state"] == "COMPLETED" and resumed["attempts"] == 2
    assert [r["step"] for r in resumed["history"]] == [r["step"] for r in reference["history"]]
    for key, value in reference["metrics"].items():
        assert resumed["metrics"][key] == pytest.approx(value, abs=1e-6), key
    # The handlers the job borrowed are given back.
    assert signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler)
