"""Faults on the real cluster: submitit's preemption signal, a member killed with SIGKILL, 2-task DDP and DeepSpeed
members, and the one-line answers to a missing sbatch or an unknown partition.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_slurm_sweep import SLURM, TINY, _orchestra, _sweep_dir, _wait_until_ended

from launch import manifest

pytestmark = pytest.mark.slurm

LONGER = [*TINY, "data.train_limit=2048", "trainer.max_epochs=3", "module.hparams.proj_hidden_dim=32"]


def _wait_for(path: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert path.exists(), f"{path} never appeared"


def _reference_metrics(tmp_path: Path) -> dict:
    done = _orchestra("train", "method=simclr", *LONGER, f"output_root={tmp_path / 'ref'}", cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    (ref_dir,) = list((tmp_path / "ref" / "train").iterdir())
    return json.loads((ref_dir / "results.json").read_text())["metrics"]


def test_submitit_preemption_signal_requeues_and_resumes_exactly(slurm_cluster, tmp_path):
    expected = _reference_metrics(tmp_path)
    assert _orchestra("sweep", "method=simclr", "seed=0", "-m", *SLURM, *LONGER, f"output_root={tmp_path}",
                      cwd=tmp_path).returncode == 0
    member = manifest.load(_sweep_dir(tmp_path)).members[0]
    _wait_for(Path(member.job_dir) / "checkpoints" / "last.ckpt")
    # What submitit's Job._interrupt() does: USR2 to the job's processes; submitit's handler requeues.
    subprocess.run(["scancel", "--signal=USR2", member.job_ids[-1]], check=True)

    assert _wait_until_ended(_sweep_dir(tmp_path), timeout=400) == ["COMPLETED"]
    results = json.loads((Path(member.job_dir) / "results.json").read_text())
    assert results["attempts"] == 2
    log = (Path(member.job_dir).parent / "slurm").rglob("*_log.out")
    assert any("saved" in p.read_text() for p in log)  # the checkpoint came from the signal, mid-training
    for key, value in expected.items():
        assert results["metrics"][key] == pytest.approx(value, abs=1e-6), key


def _kill_training_process(sweep_dir: Path, member: manifest.Member) -> None:
    """SIGKILL the member's training process (the job's child running orchestra.job), as the OOM killer would pick
    the big process, not the small submitit one that waits for it."""
    _wait_for(Path(member.job_dir) / "checkpoints" / "last.ckpt")
    found = subprocess.run(["pgrep", "-f", f"orchestra.job {member.job_dir}$"], capture_output=True,
                           text=True).stdout.split()
    assert len(found) == 1, f"expected one training process of {member.job_dir}, found {found}"
    os.kill(int(found[0]), signal.SIGKILL)


def test_sigkilled_member_without_retries_shows_failed_and_resume_completes_it(slurm_cluster, tmp_path):
    assert _orchestra("sweep", "method=simclr", "seed=0", "-m", *SLURM, *LONGER, "launcher.max_failures=0",
                      f"output_root={tmp_path}", cwd=tmp_path).returncode == 0
    sweep_dir = _sweep_dir(tmp_path)
    member = manifest.load(sweep_dir).members[0]
    _kill_training_process(sweep_dir, member)
    started = time.monotonic()
    assert _wait_until_ended(sweep_dir, timeout=120) == ["FAILED"]
    assert time.monotonic() - started < 120  # seen as failed in bounded time, not hanging on a dead job
    sacct = subprocess.run(["sacct", "-n", "-P", "-X", "--format=State", "-j", member.job_ids[-1]],
                           capture_output=True, text=True, check=True).stdout.split()
    assert sacct == ["FAILED"]

    resumed = _orchestra("resume", str(sweep_dir), cwd=tmp_path)
    assert resumed.returncode == 0 and "resuming 1 member(s)" in resumed.stdout
    assert _wait_until_ended(sweep_dir, timeout=300) == ["COMPLETED"]
    results = json.loads((Path(member.job_dir) / "results.json").read_text())
    assert results["state"] == "COMPLETED" and results["attempts"] == 2


def test_sigkilled_member_is_run_again_in_place_by_max_failures(slurm_cluster, tmp_path):
    assert _orchestra("sweep", "method=simclr", "seed=0", "-m", *SLURM, *LONGER, f"output_root={tmp_path}",
                      cwd=tmp_path).returncode == 0  # launcher.max_failures=1 by default
    sweep_dir = _sweep_dir(tmp_path)
    member = manifest.load(sweep_dir).members[0]
    _kill_training_process(sweep_dir, member)
    assert _wait_until_ended(sweep_dir, timeout=300) == ["COMPLETED"]  # nobody called resume
    after = manifest.load(sweep_dir).members[0]
    assert (after.attempts, after.retries, after.job_ids) == (2, 1, member.job_ids)  # same job, run again in place
    results = json.loads((Path(member.job_dir) / "results.json").read_text())
    assert results["state"] == "COMPLETED" and results["attempts"] == 2 and len(results["history"]) == 3
    logs = "".join(p.read_text() for p in (sweep_dir / "slurm").rglob("*_log.out"))
    assert "member killed by SIGKILL; running it again in place" in logs and "resuming from" in logs


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
    # A 1-minute limit with the warning 30 s before it. slurmctld checks time limits only every 30 s and may warn up
    # to one check early, so a warning lands anywhere from start-up (3 s, seen in CI) to ~60 s after a start. The
    # first start sleeps 0.6 s after each of its 4 x 32 batches (77 s), so it cannot finish inside its window (at
    # 0.3 s it did); resumed starts run at full speed, so the few windows the rest needs stay well inside
    # max_timeouts. What is tested is that every requeue resumes, not how many it takes.
    limits = ["launcher.time_min=1", "launcher.signal_delay_s=30", "launcher.max_timeouts=10"]
    long_enough = [*LONGER, "trainer.max_epochs=4", "+callbacks.slow._target_=orchestra_testkit.SlowBatches",
                   "+callbacks.slow.seconds=0.6", "+callbacks.slow.first_start_only=true"]
    testkit = str(Path(__file__).resolve().parent.parent / "orchestra")  # the job imports the callback from there
    assert _orchestra("sweep", "method=simclr", "seed=0", "-m", *SLURM, *limits, *long_enough,
                      f"output_root={tmp_path}", cwd=tmp_path, PYTHONPATH=testkit).returncode == 0
    sweep_dir = _sweep_dir(tmp_path)
    assert _wait_until_ended(sweep_dir, timeout=600) == ["COMPLETED"]
    results = json.loads((Path(manifest.load(sweep_dir).members[0].job_dir) / "results.json").read_text())
    assert results["attempts"] >= 2 and len(results["history"]) == 4
