"""A preemption or time-limit warning (SIGUSR2) that arrives while a SLURM member is still starting up is kept, not
lost: the launcher starts the job body with SIGUSR2 blocked, the signal waits pending, and the body's guard takes it
the moment it unblocks it, saving at the first batch. (Ignoring it instead, as before, let a member warned during
start-up train on into its time limit; CI caught exactly that.)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

from orchestra_testkit import read_json, subprocess_env, tiny_overrides, train_in_process

GUARD_LIFETIME = """
import os, signal, sys, threading, time
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})  # as the SLURM launcher starts a job body: before any
from orchestra.jobstate.preemption import PreemptionGuard  # thread exists (torch starts some), so they all block it too
os.kill(os.getpid(), signal.SIGUSR2)  # a warning during start-up: held pending, nobody listens yet
assert signal.SIGUSR2 in signal.sigpending()
guard = PreemptionGuard(sys.argv[1])
assert guard.received == signal.SIGUSR2 and signal.SIGUSR2 not in signal.sigpending()
# A thread started during training (a loader's pin-memory thread, a logger's) does not block the signal.
worker = threading.Thread(target=time.sleep, args=(2,))
worker.start()
guard.restore()
os.kill(os.getpid(), signal.SIGUSR2)  # a late warning after the work is done: must not end the process
signal.pthread_kill(worker.ident, signal.SIGUSR2)
time.sleep(0.2)
print("alive")
"""


def test_guard_takes_a_warning_pending_from_start_up_and_a_late_one_cannot_kill_the_body(tmp_path):
    # In a process of its own: the failure this guards against is the process dying of the signal.
    done = subprocess.run([sys.executable, "-c", GUARD_LIFETIME, str(tmp_path / "last.ckpt")], env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and lines[-1] == "alive", (done.returncode, done.stderr[-2000:])
    assert lines.count("received SIGUSR2: checkpointing at the next batch boundary") == 1  # the pending one only


def _child_pids(parent: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


def test_member_warned_during_start_up_saves_at_its_first_batch(tmp_path):
    # A real job directory: the config a tiny `orchestra train` wrote, in a fresh directory of its own.
    finished = train_in_process(tiny_overrides(tmp_path / "made", "simclr"))
    job_dir = tmp_path / "member"
    job_dir.mkdir()
    shutil.copy(finished / "config.yaml", job_dir / "config.yaml")

    # What submitit runs on the node: MemberJob, which starts the body (python -m orchestra.job) as its child.
    member = subprocess.Popen(
        [sys.executable, "-c", "import sys; from launch.member import MemberJob; print(MemberJob(sys.argv[1])())",
         str(job_dir)], env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    deadline = time.monotonic() + 60
    while not _child_pids(member.pid):
        assert time.monotonic() < deadline and member.poll() is None, "the job body never started"
        time.sleep(0.02)
    # The body is importing torch: seconds before its guard exists. SLURM signals every process of the step.
    os.killpg(member.pid, signal.SIGUSR2)
    out, _ = member.communicate(timeout=300)

    assert member.returncode == 0, out
    assert out.strip().endswith("preempted"), out
    assert "received SIGUSR2" in out and "at epoch 0 after 0 batches" in out, out
    results = read_json(job_dir / "results.json")
    assert results["state"] == "PREEMPTED" and (job_dir / "checkpoints" / "last.ckpt").exists()
