"""`orchestra sweep launcher=slurm` against the real development cluster: one array, non-blocking, states from
sacct, FAILED for Python errors, resume of only what did not complete, and exact resume after `scontrol requeue`.

Faults are the member's own, at a fixed batch (tests/orchestra/fault_callbacks.py, put on the job's PYTHONPATH):
the member asks SLURM for the requeue itself and holds that batch until SLURM's SIGTERM reaches it, so the test's
action lands at a known point of training instead of whenever a poller noticed a checkpoint file.
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
# Three epochs of 8 batches: the faults land at epoch 1, batch 2 (after epoch 0's last.ckpt, before the end).
LONGER = [*TINY, "data.train_limit=512", "trainer.max_epochs=3", "module.hparams.proj_hidden_dim=32"]
FAULTS = str(Path(__file__).resolve().parent.parent / "orchestra")  # where the job imports fault_callbacks from
# The tiny runs are far too short to beat the random-init kNN floor (MNIST digits: a random CNN is already a good
# kNN feature; measured 0.734 random init / 0.820 raw pixels vs 0.75-0.77 after TINY), so the real check is that
# training did not wreck the backbone: a collapsed or mis-evaluated member scores near chance (0.1), far below.
KNN_BELOW_FLOOR_AT_MOST = 0.05  # ~6 of 128 validation digits


def fault(name: str, target: str, *settings: str) -> list[str]:
    """Overrides adding callback ``name`` (a class of tests/orchestra/fault_callbacks.py) with ``settings``."""
    return [f"+callbacks.{name}._target_=fault_callbacks.{target}", *(f"+callbacks.{name}.{s}" for s in settings)]


_UNINTERRUPTED: dict[tuple[str, ...], dict] = {}


def uninterrupted_metrics(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Final metrics of an uninterrupted ``LONGER`` simclr run, trained once per session (outside SLURM: the job
    body is the same): the target of every exact-resume test here and in test_slurm_faults."""
    key = tuple(LONGER)
    if key not in _UNINTERRUPTED:
        root = tmp_path_factory.mktemp("uninterrupted")
        done = _orchestra("train", "method=simclr", *LONGER, f"output_root={root}", cwd=root, timeout=300)
        assert done.returncode == 0, done.stderr
        (ref_dir,) = list((root / "train").iterdir())
        _UNINTERRUPTED[key] = json.loads((ref_dir / "results.json").read_text())["metrics"]
    return _UNINTERRUPTED[key]


@pytest.fixture(scope="module")
def reference_metrics(tmp_path_factory) -> dict:
    return uninterrupted_metrics(tmp_path_factory)


def assert_same_metrics(results: dict, expected: dict) -> None:
    for key, value in expected.items():
        assert results["metrics"][key] == pytest.approx(value, abs=1e-6), key


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
        knn, floor = results["metrics"]["knn/top1"], results["floors"]["random_init/knn_top1"]
        print(f"{results['method']}: kNN top-1 {knn:.4f}, random-init floor {floor:.4f}, probe "
              f"{results['metrics']['probe/top1']:.4f}")
        assert results["state"] == "COMPLETED" and knn >= floor - KNN_BELOW_FLOOR_AT_MOST, (knn, results["floors"])
        assert results["metrics"]["probe/top1"] > 0.2  # the probe trains from nothing: chance is 0.1
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


def test_scontrol_requeue_resumes_from_the_checkpoint_to_the_uninterrupted_result(slurm_cluster, tmp_path,
                                                                                   reference_metrics):
    # At epoch 1, batch 2 of its first start the member runs `scontrol requeue` on its own job and holds that batch
    # until SLURM's SIGTERM arrives; the guard then saves there and SLURM starts the job again.
    requeue = fault("requeue", "AwaitSignalOnce", "epoch=1", "batch=2", "signal=SIGTERM",
                    'command=["scontrol","requeue","$SLURM_JOB_ID"]')
    done = _orchestra("sweep", "method=simclr", "seed=0", "-m", *SLURM, *LONGER, *requeue, f"output_root={tmp_path}",
                      cwd=tmp_path, PYTHONPATH=FAULTS)
    assert done.returncode == 0, done.stderr
    sweep_dir = _sweep_dir(tmp_path)
    member = manifest.load(sweep_dir).members[0]

    assert _wait_until_ended(sweep_dir, timeout=400) == ["COMPLETED"]
    results = json.loads((Path(member.job_dir) / "results.json").read_text())
    assert results["attempts"] == 2
    logs = "".join(p.read_text() for p in (sweep_dir / "slurm").rglob("*_log.out"))
    assert "received SIGTERM" in logs and "at epoch 1 after 2 batches" in logs, logs[-3000:]
    assert_same_metrics(results, reference_metrics)
