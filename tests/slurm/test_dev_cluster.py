"""Real jobs on the real single-node SLURM cluster: sbatch, sacct states and exit codes, scancel, submitit.

Waits poll conditions with generous deadlines (the machine may be shared with CPU-heavy work); the whole file
runs in well under two minutes on an idle 2-core machine.
"""

from __future__ import annotations

import operator
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import submitit

from launch.cluster import PARTITION, DevCluster

pytestmark = pytest.mark.slurm

# States after which a job will not change again (sacct prints "CANCELLED by <uid>" for cancellations).
FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE")
DEADLINE_S = 60.0


def _run(*argv: str) -> str:
    # SLURM_CONF comes from os.environ, set by the slurm_cluster fixture.
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout


def _sbatch(tmp_path: Path, wrap: str) -> str:
    out = tmp_path / "out-%j.txt"
    return _run("sbatch", "--parsable", f"--partition={PARTITION}", f"--output={out}", f"--wrap={wrap}").strip()


def _accounting(job_id: str) -> tuple[str, str] | None:
    """(State, ExitCode) of the allocation as recorded by slurmdbd, or None while sacct does not know it yet."""
    lines = _run("sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State,ExitCode").splitlines()
    if not lines:
        return None
    state, exit_code = lines[0].split("|")
    return state, exit_code


def _wait_final(job_id: str, timeout: float = DEADLINE_S) -> tuple[str, str]:
    end = time.monotonic() + timeout
    while True:
        record = _accounting(job_id)
        if record is not None and record[0].startswith(FINAL_STATES):
            return record
        if time.monotonic() > end:
            raise AssertionError(f"job {job_id} not finished after {timeout:.0f}s; sacct says {record}")
        time.sleep(0.5)


def _wait_running(job_id: str, timeout: float = DEADLINE_S) -> None:
    end = time.monotonic() + timeout
    while _run("squeue", "-h", "-j", job_id, "-o", "%T").strip() != "RUNNING":
        if time.monotonic() > end:
            raise AssertionError(f"job {job_id} not RUNNING after {timeout:.0f}s")
        time.sleep(0.3)


def _result(job: submitit.Job[Any], timeout: float = DEADLINE_S) -> Any:
    # job.result() has no timeout of its own; a cluster problem must fail the test, not hang it.
    end = time.monotonic() + timeout
    while not job.done():
        if time.monotonic() > end:
            raise AssertionError(f"submitit job {job.job_id} not done after {timeout:.0f}s (state {job.state})")
        time.sleep(0.5)
    return job.result()


def _executor(folder: Path) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(timeout_min=5, slurm_partition=PARTITION)
    return executor


def test_cluster_reports_idle_node_and_up_is_a_no_op(slurm_cluster: DevCluster) -> None:
    before = slurm_cluster.status()
    assert before["running"], before
    assert before["node_state"] in ("idle", "mix", "alloc"), before
    slurm_cluster.up()
    assert slurm_cluster.status()["daemons"] == before["daemons"], "up on a running cluster restarted daemons"
    assert slurm_cluster.env() == {"SLURM_CONF": str(slurm_cluster.slurm_conf)}


def test_wrapped_echo_completes_and_writes_its_output(slurm_cluster: DevCluster, tmp_path: Path) -> None:
    job_id = _sbatch(tmp_path, "echo hi")
    assert _wait_final(job_id) == ("COMPLETED", "0:0")
    assert (tmp_path / f"out-{job_id}.txt").read_text().strip() == "hi"


def test_failing_job_is_failed_with_its_exit_code(slurm_cluster: DevCluster, tmp_path: Path) -> None:
    job_id = _sbatch(tmp_path, "exit 3")
    assert _wait_final(job_id) == ("FAILED", "3:0")


def test_cancelled_running_job_is_cancelled_in_accounting(slurm_cluster: DevCluster, tmp_path: Path) -> None:
    job_id = _sbatch(tmp_path, "sleep 300")
    _wait_running(job_id)
    _run("scancel", job_id)
    state, _ = _wait_final(job_id)
    assert state.startswith("CANCELLED"), state


def test_timed_out_job_is_still_queued_for_status_until_it_leaves_the_queue(slurm_cluster: DevCluster,
                                                                            tmp_path: Path) -> None:
    """sacct says TIMEOUT as soon as the limit hits, while the job sits in COMPLETING, which is when submitit
    requeues a member. Status must not call that the member's end (`status --wait` stopped there, CI saw it)."""
    from launch.slurm import scheduler_states

    # Ignores SIGTERM, so it stays in COMPLETING until SIGKILL after KillWait (5 s on the dev cluster).
    job_id = _sbatch(tmp_path, "trap '' TERM; for i in $(seq 3000); do sleep 0.2; done")
    _wait_running(job_id)
    _run("scontrol", "update", f"JobId={job_id}", "EndTime=now")  # out of time at slurmctld's next check (<= 30 s)
    samples = []  # (what sacct alone says, what status is told, whether squeue lists the job afterwards)
    end = time.monotonic() + 90
    while not samples or samples[-1][1] != "TIMEOUT":
        assert time.monotonic() < end, f"job {job_id} never timed out: {samples[-5:]}"
        raw = _accounting(job_id)
        told = scheduler_states([job_id]).get(job_id, {}).get("state")
        queued = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True).stdout
        samples.append((raw[0] if raw else None, told, bool(queued.strip())))
        time.sleep(0.1)  # the window lasts KillWait (5 s); each sample costs 4 scheduler queries
    assert ("TIMEOUT", "COMPLETING", True) in samples, samples  # the window existed, and status saw it as queued
    assert not [s for s in samples if s[1] == "TIMEOUT" and s[2]], samples  # TIMEOUT only once out of the queue


def test_submitit_job_returns_its_value(slurm_cluster: DevCluster, tmp_path: Path) -> None:
    # A stdlib callable pickles by reference and imports in the job; a function from this test module would not.
    job = _executor(tmp_path).submit(operator.add, 40, 2)
    assert _result(job) == 42


def test_submitit_map_array_is_one_array_job(slurm_cluster: DevCluster, tmp_path: Path) -> None:
    jobs = _executor(tmp_path).map_array(operator.mul, [1, 2, 3], [10, 10, 10])
    array_ids = {job.job_id.split("_")[0] for job in jobs}
    assert len(array_ids) == 1, [job.job_id for job in jobs]
    assert [_result(job) for job in jobs] == [10, 20, 30]
    # Accounting ends with three tasks of that one array. Polled: for a few seconds after the tasks finish, slurmdbd
    # 22.05 lists the array under its raw id only ("N|COMPLETED") and does not yet know the task ids N_0, N_1, N_2.
    (array_id,) = array_ids
    expected = [f"{array_id}_{i}|COMPLETED" for i in range(3)]
    end = time.monotonic() + DEADLINE_S
    while (tasks := sorted(_run("sacct", "-j", array_id, "-X", "-n", "-P", "-o", "JobID,State").split())) != expected:
        assert time.monotonic() < end, f"sacct shows {tasks} for array {array_id}, expected {expected}"
        time.sleep(0.5)


def test_submitit_batch_is_one_array_job(slurm_cluster: DevCluster, tmp_path: Path) -> None:
    executor = _executor(tmp_path)
    with executor.batch():
        jobs = [executor.submit(pow, 2, k) for k in range(3)]
    assert len({job.job_id.split("_")[0] for job in jobs}) == 1, [job.job_id for job in jobs]
    assert [_result(job) for job in jobs] == [1, 2, 4]
