"""launcher.max_failures on the local launcher: a member whose process is SIGKILLed mid-training runs again in its
job dir and ends where an uninterrupted twin ends; with max_failures=0 it stays FAILED; a Python error is never
retried. Real processes and real signals; the three sweeps run at once to keep the suite's wall time down.

The kill is the member's own (fault_callbacks.KillSelfOnce): SIGKILL at batch 2 of epoch 1 of its first start,
i.e. after epoch 0's last.ckpt and before the end, however fast or slow the machine is.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from orchestra_testkit import SMALL_HEADS, TINY, cli_command, read_json, subprocess_env

# Three epochs of 8 batches; the kill lands at epoch 1, batch 2.
LONGER = [*TINY, "data.train_limit=512", "trainer.max_epochs=3", *SMALL_HEADS["simclr"]]
KILL = ["+callbacks.kill._target_=fault_callbacks.KillSelfOnce", "+callbacks.kill.epoch=1", "+callbacks.kill.batch=2"]
CRASH = ["+callbacks.crash._target_=orchestra_testkit.PreemptAfterEpoch", "+callbacks.crash.epoch=0"]


def _start_sweep(output_root: Path, *overrides: str) -> subprocess.Popen[str]:
    command = [*cli_command(), "sweep", "method=simclr", *LONGER, *overrides, f"output_root={output_root}", "-m"]
    return subprocess.Popen(command, cwd=output_root.parent, env=subprocess_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _members(output_root: Path) -> list[dict]:
    (manifest,) = list(output_root.glob("sweeps/*/sweep.json"))
    return read_json(manifest)["members"]


def test_killed_member_is_retried_up_to_max_failures_and_code_errors_never(tmp_path):
    retried, not_retried, crashed = (tmp_path / name for name in ("retried", "not-retried", "crashed"))
    for root in (retried, not_retried, crashed):
        root.mkdir()
    # Two members that differ only in whether the kill is armed: the disarmed one is the uninterrupted reference.
    sweeps = {
        "retried": _start_sweep(retried, *KILL, "+callbacks.kill.armed=true,false", "launcher.parallelism=2"),
        "not_retried": _start_sweep(not_retried, *KILL, "launcher.max_failures=0"),
        "crashed": _start_sweep(crashed, *CRASH),  # default max_failures=1
    }
    outputs = {name: process.communicate(timeout=300)[0] for name, process in sweeps.items()}

    assert sweeps["retried"].returncode == 0, outputs["retried"][-3000:]
    killed, twin = sorted(_members(retried), key=lambda m: "+callbacks.kill.armed=False" in m["overrides"])
    assert "+callbacks.kill.armed=True" in killed["overrides"], killed["overrides"]  # as Hydra writes a bool
    assert (killed["state"], killed["attempts"], killed["retries"]) == ("COMPLETED", 2, 1)
    assert (twin["state"], twin["attempts"], twin["retries"]) == ("COMPLETED", 1, 0)
    log = (Path(killed["job_dir"]) / "log.txt").read_text()
    assert "member killed by SIGKILL; running it again" in log and "resuming from" in log
    assert "fault_callbacks: sigkill at epoch 1 batch 2" in log
    assert "fault_callbacks" not in (Path(twin["job_dir"]) / "log.txt").read_text()
    results, reference = (read_json(Path(m["job_dir"]) / "results.json") for m in (killed, twin))
    assert results["attempts"] == 2 and len(results["history"]) == 3
    for key, value in reference["metrics"].items():
        assert results["metrics"][key] == pytest.approx(value, abs=1e-6), key

    assert sweeps["not_retried"].returncode == 1, outputs["not_retried"][-3000:]
    (member,) = _members(not_retried)
    assert (member["state"], member["attempts"], member["retries"]) == ("FAILED", 1, 0)
    assert "fault_callbacks: sigkill at epoch 1 batch 2" in (Path(member["job_dir"]) / "log.txt").read_text()

    assert sweeps["crashed"].returncode == 1
    (member,) = _members(crashed)
    assert (member["state"], member["attempts"], member["retries"]) == ("FAILED", 1, 0)
    results = read_json(Path(member["job_dir"]) / "results.json")
    assert results["state"] == "FAILED" and "simulated preemption" in results["error"] and results["attempts"] == 1
