"""A search sweep on the real development cluster: 2 workers (one SLURM array), 4 trials; one worker preempted
(SIGUSR2) mid-trial and requeued by submitit, the other SIGKILLed and restarted by `orchestra resume`.

The preemption is trial 0's own, at a fixed batch (tests/orchestra/fault_callbacks.AwaitSignalOnce asks SLURM for
USR2 and holds the batch until it arrives). Only trial 0 carries it armed: the callback's epoch is the string
``${search.trial.number}1``, which trial 0 resolves to "01" (epoch 1) and every later trial to 11, 21, 31 (past
max_epochs, so never). The SIGKILL is the test's, to the other worker's process while its trial trains.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from test_slurm_sweep import FAULTS, LONGER, SLURM, _orchestra, _sweep_dir, _wait_until_ended, fault

from launch import manifest

pytestmark = pytest.mark.slurm

SEARCH = ["method=simclr", *LONGER, "optim.lr=tag(log, interval(1e-3, 1e-2))", "search=optuna",
          "search.sampler=random", "search.pruner.name=none", "search.trials=4", "search.parallel=2",
          "launcher.max_failures=0"]  # a killed worker is not retried in place: `orchestra resume` restarts it
# USR2 to this array task only (<array>_<task>: the first task's SLURM_JOB_ID is the whole array's id, which would
# signal both workers), from a scancel that ignores USR2 (it is a process of the job step too, and the signal it
# asked for reached it and killed it before it exited).
_SCANCEL_THIS_TASK = "import os,signal,subprocess;signal.signal(signal.SIGUSR2,signal.SIG_IGN);e=os.environ;" \
                     "task=e['SLURM_ARRAY_JOB_ID']+'_'+e['SLURM_ARRAY_TASK_ID'];" \
                     "subprocess.run(['scancel','--signal=USR2',task],check=True)"
_SCANCEL = [sys.executable, "-c", _SCANCEL_THIS_TASK]
PREEMPT_TRIAL_0 = fault("preempt", "AwaitSignalOnce", "epoch=${search.trial.number}1", "batch=2",
                        "signal=SIGUSR2", f"command={json.dumps(_SCANCEL)}")


def _study(sweep_dir: Path):
    import optuna

    from orchestra.search.study import storage

    return optuna.load_study(study_name="search", storage=storage(sweep_dir))


def _results(sweep_dir: Path, number: int) -> dict:
    try:
        return json.loads((sweep_dir / "trials" / f"{number:04d}" / "results.json").read_text())
    except (OSError, ValueError):
        return {}


def _worker_pid(worker_dir: Path) -> int | None:
    """The pid of the worker process running for ``worker_dir`` on this machine (the dev cluster's one node)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"orchestra.search.worker" in cmdline and str(worker_dir).encode() in cmdline:
            return int(proc.name)
    return None


def _wait_for(what: str, check, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def test_search_survives_preemption_and_a_killed_worker(slurm_cluster, tmp_path):
    done = _orchestra("sweep", *SEARCH, *PREEMPT_TRIAL_0, f"output_root={tmp_path}", "-m", *SLURM, cwd=tmp_path,
                      PYTHONPATH=FAULTS)
    assert done.returncode == 0, done.stdout + done.stderr
    sweep_dir = _sweep_dir(tmp_path)
    ids = [m.job_ids[-1] for m in manifest.load(sweep_dir).members]
    assert len(ids) == 2 and len({i.split("_")[0] for i in ids}) == 1  # the two workers are one array

    # Trials 0 and 1 start together, one per worker. Kill trial 1's worker (not its trial) once trial 1 has
    # validated: the trial, told by the kernel that its parent died, saves; the worker's array task FAILS.
    trial_1 = _wait_for("trial 1 to validate", lambda: _results(sweep_dir, 1).get("history"))
    assert trial_1
    owner = _study(sweep_dir).get_trials()[1].user_attrs["worker"]
    pid = _wait_for("trial 1's worker process", lambda: _worker_pid(sweep_dir / f"worker-{owner}"), timeout=30)
    os.kill(pid, signal.SIGKILL)

    states = _wait_until_ended(sweep_dir, timeout=900)
    assert sorted(states) == ["COMPLETED", "FAILED"], states
    assert states[owner] == "FAILED"
    trials = _study(sweep_dir).get_trials()
    assert trials[1].state.name == "RUNNING" and trials[1].user_attrs["worker"] == owner  # recoverable

    resumed = _orchestra("resume", str(sweep_dir), cwd=tmp_path, PYTHONPATH=FAULTS)
    assert resumed.returncode == 0 and f"resuming 1 member(s): {owner}" in resumed.stdout, resumed.stdout
    assert _wait_until_ended(sweep_dir, timeout=900) == ["COMPLETED", "COMPLETED"]

    trials = _study(sweep_dir).get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]  # exactly the budget: nothing asked twice
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert sorted(p.name for p in (sweep_dir / "trials").iterdir()) == ["0000", "0001", "0002", "0003"]
    for trial in trials:
        results = _results(sweep_dir, trial.number)
        assert results["state"] == "COMPLETED" and len({r["epoch"] for r in results["history"]}) == 3
        assert trial.value == results["metrics"]["probe/top1"]

    # Trial 0 was preempted at epoch 1, batch 2, requeued by submitit and resumed from last.ckpt...
    preempted = _results(sweep_dir, 0)
    assert preempted["attempts"] == 2
    log = (sweep_dir / "trials" / "0000" / "log.txt").read_text()
    assert "received SIGUSR2" in log and "at epoch 1 after 2 batches" in log and "resuming from" in log, log[-3000:]
    # ...to exactly the metrics of the same configuration trained without a break
    lr = trials[0].params["optim.lr"]
    reference = _orchestra("train", "method=simclr", *LONGER, f"optim.lr={lr!r}", f"output_root={tmp_path / 'ref'}",
                           cwd=tmp_path, timeout=600)
    assert reference.returncode == 0, reference.stderr[-3000:]
    (ref_dir,) = list((tmp_path / "ref" / "train").iterdir())
    expected = json.loads((ref_dir / "results.json").read_text())["metrics"]
    for key, value in expected.items():
        assert preempted["metrics"][key] == pytest.approx(value, abs=1e-6), key
    # Trial 1 survived its worker's SIGKILL: saved by the orphaned trial, continued by the resumed worker
    assert _results(sweep_dir, 1)["attempts"] >= 2

    status = _orchestra("status", str(sweep_dir), cwd=tmp_path)
    assert "trials: 4 of 4 asked (4 COMPLETE)" in status.stdout, status.stdout
