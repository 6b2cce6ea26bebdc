"""`orchestra sweep launcher=slurm` against the real development cluster: one array, non-blocking, states from
sacct, FAILED for Python errors, resume of only what did not complete, and exact resume after `scontrol requeue`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launch import manifest
from orchestra.sweep.records import refresh

pytestmark = pytest.mark.slurm

ORCHESTRA = [sys.executable, "-m", "orchestra.cli"]
TINY = ["data.train_limit=256", "data.val_limit=128", "data.batch_size=64", "data.eval_batch_size=256",
        "trainer.max_epochs=1", "logger=none", "++module.hparams.proj_dim=32"]
SLURM = ["launcher=slurm", "launcher.partition=debug", "launcher.time_min=10", "launcher.cpus_per_task=1"]


def _orchestra(*args: str, cwd: Path, timeout: float = 120, **env_extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_extra}  # sbatch passes this environment on to the job
    return subprocess.run([*ORCHESTRA, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _sweep_dir(root: Path) -> Path:
    (found,) = list((root / "sweeps").iterdir())
    return found


def _wait_until_ended(sweep_dir: Path, timeout: float = 300) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [record.state for record in refresh(sweep_dir)]
        if all(state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") for state in states):
            return states
        time.sleep(2)
    raise AssertionError(f"sweep {sweep_dir} still running after {timeout}s: {states}")


def test_three_member_sweep_is_one_array_that_completes(slurm_cluster, tmp_path):
    started = time.monotonic()
    # "++": the three methods name their head widths differently; an unused hparam is harmless.
    heads = ["++module.hparams.proj_hidden_dim=32", "++module.hparams.pred_hidden_dim=32",
             "++module.hparams.projection_dim=32"]
    done = _orchestra("sweep", "method=simclr,byol,vicreg", "-m", *SLURM, *TINY, *heads, f"output_root={tmp_path}",
                      cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 60  # returns once queued; it does not wait for training
    assert "orchestra status" in done.stdout
    sweep_dir = _sweep_dir(tmp_path)
    ids = [m.job_ids[-1] for m in manifest.load(sweep_dir).members]
    assert len({job_id.split("_")[0] for job_id in ids}) == 1 and len(ids) == 3  # one sbatch, one array

    assert _wait_until_ended(sweep_dir) == ["COMPLETED"] * 3
    for member in manifest.load(sweep_dir).members:
        results = json.loads((Path(member.job_dir) / "results.json").read_text())
        assert results["state"] == "COMPLETED" and 0 <= results["metrics"]["knn/top1"] <= 1
    status = _orchestra("status", str(sweep_dir), cwd=tmp_path)
    assert status.returncode == 0 and status.stdout.count("COMPLETED") == 3


def test_python_error_is_failed_in_sacct_and_resume_reruns_only_that_member(slurm_cluster, tmp_path):
    # data.views=3 makes simclr raise (it needs two views) inside the job, after submission.
    done = _orchestra("sweep", "method=simclr", "data.views=2,3", "-m", *SLURM, *TINY, f"output_root={tmp_path}",
                      cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    sweep_dir = _sweep_dir(tmp_path)
    assert _wait_until_ended(sweep_dir) == ["COMPLETED", "FAILED"]
    bad = manifest.load(sweep_dir).members[1]
    assert (bad.attempts, bad.retries) == (1, 0)  # a Python error is never retried (launcher.max_failures=1)
    sacct = subprocess.run(["sacct", "-n", "-P", "-X", "--format=State", "-j", bad.job_ids[-1]],
                           capture_output=True, text=True, check=True).stdout.split()
    assert sacct == ["FAILED"]  # never COMPLETED: the job exits non-zero
    status = _orchestra("status", str(sweep_dir), cwd=tmp_path)
    assert "member 1 failed" in status.stdout and "2 views" in status.stdout

    # Fix the member's config the way a researcher would, then resume: only member 1 is submitted again.
    config = Path(bad.job_dir) / "config.yaml"
    config.write_text(config.read_text().replace("views: 3", "views: 2"))
    resumed = _orchestra("resume", str(sweep_dir), cwd=tmp_path)
    assert resumed.returncode == 0 and "resuming 1 member(s): 1" in resumed.stdout, resumed.stdout + resumed.stderr
    assert _wait_until_ended(sweep_dir) == ["COMPLETED", "COMPLETED"]
    members = manifest.load(sweep_dir).members
    assert [len(m.job_ids) for m in members] == [1, 2]
    again = _orchestra("resume", str(sweep_dir), cwd=tmp_path)
    assert again.returncode == 0 and "nothing to resume" in again.stdout
    assert [len(m.job_ids) for m in manifest.load(sweep_dir).members] == [1, 2]


def test_scontrol_requeue_resumes_from_the_checkpoint_to_the_uninterrupted_result(slurm_cluster, tmp_path):
    longer = [*TINY, "data.train_limit=2048", "trainer.max_epochs=3", "module.hparams.proj_hidden_dim=32"]
    reference = _orchestra("train", "method=simclr", *longer, f"output_root={tmp_path / 'ref'}", cwd=tmp_path,
                           timeout=300)
    assert reference.returncode == 0, reference.stderr
    (ref_dir,) = list((tmp_path / "ref" / "train").iterdir())
    expected = json.loads((ref_dir / "results.json").read_text())["metrics"]

    done = _orchestra("sweep", "method=simclr", "seed=0", "-m", *SLURM, *longer, f"output_root={tmp_path}",
                      cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    sweep_dir = _sweep_dir(tmp_path)
    member = manifest.load(sweep_dir).members[0]
    log = Path(member.job_dir) / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 180
    while not log.exists() and time.monotonic() < deadline:  # epoch 1 saved: the job is mid-training
        time.sleep(0.5)
    assert log.exists()
    subprocess.run(["scontrol", "requeue", member.job_ids[-1]], check=True)

    assert _wait_until_ended(sweep_dir, timeout=400) == ["COMPLETED"]
    results = json.loads((Path(member.job_dir) / "results.json").read_text())
    assert results["attempts"] == 2
    for key, value in expected.items():
        assert results["metrics"][key] == pytest.approx(value, abs=1e-6), key
