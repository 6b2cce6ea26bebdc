"""Faults on the real cluster: submitit's preemption signal, a member killed with SIGKILL, 2-task DDP and DeepSpeed
members, and the one-line answers to a missing sbatch or an unknown partition.

Every fault lands at a fixed batch of the member's first start, from inside the member (tests/orchestra/
fault_callbacks.py): it SIGKILLs itself, asks SLURM for the preemption signal and holds the batch until it arrives,
or waits at that batch for its time-limit warning. No test polls for a checkpoint and then races the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_slurm_sweep import (
    FAULTS,
    LONGER,
    SLURM,
    TINY,
    _orchestra,
    _sweep_dir,
    _wait_until_ended,
    assert_same_metrics,
    fault,
    uninterrupted_metrics,
)

from launch import manifest

pytestmark = pytest.mark.slurm

# SIGKILL of the training process itself (the job's child running orchestra.job, the big process the OOM killer
# would pick, not the small submitit one that waits for it) at epoch 1, batch 2: last.ckpt is epoch 0's.
SIGKILL = fault("kill", "KillSelfOnce", "epoch=1", "batch=2")


@pytest.fixture(scope="module")
def reference_metrics(tmp_path_factory) -> dict:
    """The uninterrupted run every exact-resume test here compares with (the one test_slurm_sweep uses too)."""
    return uninterrupted_metrics(tmp_path_factory)


def _logs(sweep_dir: Path) -> str:
    return "".join(p.read_text() for p in (sweep_dir / "slurm").rglob("*_log.out"))


def test_submitit_preemption_signal_requeues_and_resumes_exactly(slurm_cluster, tmp_path, reference_metrics):
    # What submitit's Job._interrupt() does, asked for by the member itself at epoch 1, batch 2: USR2 to the job's
    # processes (`scancel --signal=USR2`); the batch is held until it arrives, and submitit's handler requeues.
    preempt = fault("preempt", "AwaitSignalOnce", "epoch=1", "batch=2", "signal=SIGUSR2",
                    'command=["scancel","--signal=USR2","$SLURM_JOB_ID"]')
    assert _orchestra("sweep", "method=simclr", "seed=0", "-m", *SLURM, *LONGER, *preempt, f"output_root={tmp_path}",
                      cwd=tmp_path, PYTHONPATH=FAULTS).returncode == 0
    member = manifest.load(_sweep_dir(tmp_path)).members[0]

    assert _wait_until_ended(_sweep_dir(tmp_path), timeout=400) == ["COMPLETED"]
    results = json.loads((Path(member.job_dir) / "results.json").read_text())
    assert results["attempts"] == 2
    logs = _logs(_sweep_dir(tmp_path))
    # the checkpoint came from the signal, mid-training, at the batch the member held
    assert "received SIGUSR2" in logs and "at epoch 1 after 2 batches" in logs, logs[-3000:]
    assert_same_metrics(results, reference_metrics)


def test_sigkilled_member_without_retries_shows_failed_and_resume_completes_it(slurm_cluster, tmp_path,
                                                                                reference_metrics):
    assert _orchestra("sweep", "method=simclr", "seed=0", "-m", *SLURM, *LONGER, *SIGKILL, "launcher.max_failures=0",
                      f"output_root={tmp_path}", cwd=tmp_path, PYTHONPATH=FAULTS).returncode == 0
    sweep_dir = _sweep_dir(tmp_path)
    member = manifest.load(sweep_dir).members[0]
    started = time.monotonic()
    assert _wait_until_ended(sweep_dir, timeout=180) == ["FAILED"]
    assert "fault_callbacks: sigkill at epoch 1 batch 2" in _logs(sweep_dir)
    assert time.monotonic() - started < 180  # seen as failed in bounded time, not hanging on a dead job
    sacct = subprocess.run(["sacct", "-n", "-P", "-X", "--format=State", "-j", member.job_ids[-1]],
                           capture_output=True, text=True, check=True).stdout.split()
    assert sacct == ["FAILED"]

    resumed = _orchestra("resume", str(sweep_dir), cwd=tmp_path, PYTHONPATH=FAULTS)
    assert resumed.returncode == 0 and "resuming 1 member(s)" in resumed.stdout
    assert _wait_until_ended(sweep_dir, timeout=300) == ["COMPLETED"]
    results = json.loads((Path(member.job_dir) / "results.json").read_text())
    assert results["state"] == "COMPLETED" and results["attempts"] == 2
    assert_same_metrics(results, reference_metrics)  # resumed from epoch 0's last.ckpt, not from scratch


def test_sigkilled_member_is_run_again_in_place_by_max_failures(slurm_cluster, tmp_path, reference_metrics):
    assert _orchestra("sweep", "method=simclr", "seed=0", "-m", *SLURM, *LONGER, *SIGKILL, f"output_root={tmp_path}",
                      cwd=tmp_path, PYTHONPATH=FAULTS).returncode == 0  # launcher.max_failures=1 by default
    sweep_dir = _sweep_dir(tmp_path)
    member = manifest.load(sweep_dir).members[0]
    assert _wait_until_ended(sweep_dir, timeout=300) == ["COMPLETED"]  # nobody called resume
    after = manifest.load(sweep_dir).members[0]
    assert (after.attempts, after.retries, after.job_ids) == (2, 1, member.job_ids)  # same job, run again in place
    results = json.loads((Path(member.job_dir) / "results.json").read_text())
    assert results["state"] == "COMPLETED" and results["attempts"] == 2 and len(results["history"]) == 3
    logs = _logs(sweep_dir)
    assert "fault_callbacks: sigkill at epoch 1 batch 2" in logs
    assert "member killed by SIGKILL; running it again in place" in logs and "resuming from" in logs
    assert_same_metrics(results, reference_metrics)


@pytest.mark.parametrize(("strategy", "shown_as"), [
    (["strategy=ddp"], "DDPStrategy"),
    (["strategy=deepspeed", "strategy.cpu_rehearsal=true"], "AtomicDeepSpeedStrategy"),  # DeepSpeed's CPU engine
])
def test_two_task_member_runs_ranks_0_and_1_through_srun(slurm_cluster, tmp_path, strategy, shown_as):
    if "strategy=deepspeed" in strategy:
        pytest.importorskip("deepspeed", reason="deepspeed is in the dev extra: pip install -e '.[dev]'")
    ranks = ["trainer.devices=2", *strategy]  # the launcher derives tasks_per_node=2 from trainer.devices
    assert _orchestra("sweep", "method=simclr", "seed=0", "-m", *SLURM, *TINY, *ranks, f"output_root={tmp_path}",
                      cwd=tmp_path).returncode == 0
    sweep_dir = _sweep_dir(tmp_path)
    assert _wait_until_ended(sweep_dir, timeout=300) == ["COMPLETED"]
    logs = "".join(p.read_text() for p in (sweep_dir / "slurm").rglob("*_log.out"))
    assert f"rank 0 of 2 ({shown_as})" in logs and f"rank 1 of 2 ({shown_as})" in logs
    results = json.loads((Path(manifest.load(sweep_dir).members[0].job_dir) / "results.json").read_text())
    assert results["attempts"] == 1  # written by rank 0 only: rank 1 did not count a second attempt


def test_missing_sbatch_and_unknown_partition_are_one_line(slurm_cluster, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    no_slurm = {**os.environ, "PATH": str(empty)}  # /bin is /usr/bin on Debian, so nothing else would hide sbatch
    missing = subprocess.run([sys.executable, "-m", "orchestra.cli", "sweep", "method=simclr", "-m", *SLURM, *TINY,
                              f"output_root={tmp_path}"], env=no_slurm, capture_output=True, text=True, cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "launcher=local" in missing.stderr
    bad = _orchestra("sweep", "method=simclr", "-m", *SLURM, "launcher.partition=nosuchpartition", *TINY,
                     f"output_root={tmp_path / 'bad'}", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "partition" in bad.stderr.lower(), bad.stderr


def test_member_past_its_time_limit_checkpoints_requeues_and_completes(slurm_cluster, tmp_path):
    # A 1-minute limit with the warning 30 s before it. slurmctld checks time limits only every 30 s, so the warning
    # lands anywhere from start-up to ~60 s after a start. Instead of slowing every batch until the first start
    # surely outlives its window, the member waits at epoch 0, batch 2 of its first start until the warning
    # arrives (a warning during start-up is saved even earlier), so it is always warned mid-training; later starts
    # run at full speed, and the few windows the rest needs stay well inside max_timeouts.
    limits = ["launcher.time_min=1", "launcher.signal_delay_s=30", "launcher.max_timeouts=10"]
    wait = fault("warned", "AwaitSignalOnce", "epoch=0", "batch=2", "signal=SIGUSR2", "timeout=150")
    assert _orchestra("sweep", "method=simclr", "seed=0", "-m", *SLURM, *limits, *LONGER, "trainer.max_epochs=4",
                      *wait, f"output_root={tmp_path}", cwd=tmp_path, PYTHONPATH=FAULTS).returncode == 0
    sweep_dir = _sweep_dir(tmp_path)
    assert _wait_until_ended(sweep_dir, timeout=600) == ["COMPLETED"]
    results = json.loads((Path(manifest.load(sweep_dir).members[0].job_dir) / "results.json").read_text())
    assert results["attempts"] >= 2 and len(results["history"]) == 4
    assert "received SIGUSR2" in _logs(sweep_dir)
