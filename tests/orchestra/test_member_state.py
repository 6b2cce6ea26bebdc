"""How status merges the manifest, the scheduler's answer and the job's own results file into one state."""

from __future__ import annotations

from launch.manifest import Member
from orchestra.sweep.records import ACTIVE, TERMINAL, member_state, scheduler_view


def _member(job_ids: list[str], state: str = "PENDING") -> Member:
    return Member(index=0, overrides=["method=simclr"], job_dir="/nonexistent", state=state, job_ids=job_ids)


def test_python_error_reads_failed_even_when_the_scheduler_says_completed():
    assert member_state(_member(["7_0"]), {"7_0": {"state": "COMPLETED"}}, {"state": "FAILED"}) == "FAILED"


def test_the_results_file_decides_completed():
    assert member_state(_member(["7_0"]), {"7_0": {"state": "FAILED"}}, {"state": "COMPLETED"}) == "COMPLETED"


def test_scheduler_states_while_queued_running_or_cancelled():
    member = _member(["7_0"])
    assert member_state(member, {"7_0": {"state": "REQUEUED"}}, {"state": "PREEMPTED"}) == "PENDING"
    assert member_state(member, {"7_0": {"state": "RUNNING"}}, {"state": "RUNNING"}) == "RUNNING"
    assert member_state(member, {"7_0": {"state": "CANCELLED by 0"}}, {}) == "CANCELLED"
    assert member_state(member, {"7_0": {"state": "NODE_FAIL"}}, {"state": "RUNNING"}) == "FAILED"
    # Held after a requeue, or still being stopped: in the queue, so never an end that resume would act on.
    assert member_state(member, {"7_0": {"state": "REQUEUE_HOLD"}}, {"state": "PREEMPTED"}) == "PENDING"
    assert member_state(member, {"7_0": {"state": "SIGNALING"}}, {"state": "RUNNING"}) == "RUNNING"


def test_a_job_that_ended_without_finishing_is_never_left_running():
    # The scheduler's job exited cleanly while the results file still says RUNNING: the member was stopped.
    state = member_state(_member(["7_0"]), {"7_0": {"state": "COMPLETED"}}, {"state": "RUNNING"})
    assert state == "FAILED" and state in TERMINAL


def test_members_never_submitted_are_resumable_not_active():
    state = member_state(_member([]), {}, {})
    assert state == "NOT_SUBMITTED" and state not in ACTIVE and state in TERMINAL


def _local_state(pid: int) -> str:
    """The state status gives a local member the manifest calls RUNNING, with what the local launcher sees."""
    member = _member([f"local:{pid}"], state="RUNNING")
    return member_state(member, scheduler_view([member]), {"state": "RUNNING"})


def test_a_dead_local_process_reads_failed():
    # pid 999999999 cannot exist, as after a kill -9 of the member's process.
    assert _local_state(999999999) == "FAILED"


def test_a_live_job_body_reads_running():
    import subprocess
    import sys

    # The local launcher knows its members by the job entry on their command line (python -m orchestra.job ...).
    body = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(30)", "-m",
                             "orchestra.job"], stdout=subprocess.PIPE, text=True)
    try:
        assert body.stdout.readline() == "up\n"  # running its own code, so its command line is in /proc
        assert _local_state(body.pid) == "RUNNING"
    finally:
        body.kill()
        body.wait()


def test_a_reused_pid_of_another_program_is_not_the_member():
    # After the member died its pid may belong to anything; cancel must not signal it and status must not wait on it.
    import os
    import subprocess
    import sys

    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert _local_state(stranger.pid) == "FAILED"
    finally:
        stranger.kill()
        stranger.wait()
    assert _local_state(os.getpid()) == "FAILED"


def test_status_shows_only_the_overrides_that_differ():
    from orchestra.sweep.control import differing_overrides

    members = [Member(index=i, overrides=[f"method={m}", "launcher=slurm", "launcher.wait=True"], job_dir="/x")
               for i, m in enumerate(["simclr", "byol"])]
    assert differing_overrides(members) == [["method=simclr"], ["method=byol"]]
    assert differing_overrides(members[:1]) == [["method=simclr", "launcher=slurm", "launcher.wait=True"]]
