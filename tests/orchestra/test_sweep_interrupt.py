"""Ctrl+C (SIGINT) or SIGTERM to a local ``orchestra sweep`` at three points — while its first member starts up,
in the middle of an epoch, and while a member writes its checkpoint — stops the sweep with every member
INTERRUPTED (the one that never started too), no process left behind, one line saying how to resume; and
``orchestra resume`` then ends every member exactly where an uninterrupted run ends, with no earlier record lost.
A sweep process killed outright (SIGKILL) leaves no member training either: each saves and ends INTERRUPTED.

Real processes and real signals. The mid-epoch and checkpoint faults are sent by the member itself
(fault_callbacks.InterruptSweepOnce) so they land at a fixed point however slow the machine is; the six sweeps run
at once to keep the suite's wall time down.
"""

from __future__ import annotations

import csv
import signal
import subprocess
import time
from pathlib import Path

import pytest
from orchestra_testkit import SMALL_HEADS, TINY, cli_command, read_json, subprocess_env

from orchestra.sweep.records import read_records

SEEDS = (0, 1)
EPOCHS = "trainer.max_epochs=2"
CASES = {
    f"{name}-{phase}": (name, phase) for name in ("SIGINT", "SIGTERM") for phase in ("startup", "batch", "checkpoint")
}
# The sweep process killed outright: its members get SIGINT from the kernel (they asked for it), save and stop.
CASES["SIGKILL-batch"] = ("SIGKILL", "batch")


def _fault(name: str, phase: str) -> list[str]:
    if phase == "startup":
        return []
    return ["+callbacks.stop._target_=fault_callbacks.InterruptSweepOnce", f"+callbacks.stop.signal={name}",
            f"+callbacks.stop.when={phase}"]


def _start(root: Path, name: str, phase: str) -> subprocess.Popen[str]:
    root.mkdir(parents=True)
    command = [*cli_command(), "sweep", "method=simclr", *TINY, *SMALL_HEADS["simclr"], EPOCHS, "logger=csv",
               "launcher.parallelism=1",
               f"seed={','.join(map(str, SEEDS))}", *_fault(name, phase), f"output_root={root}", "-m"]
    return subprocess.Popen(command, cwd=root, env=subprocess_env(), text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def _sweep_dir(root: Path) -> Path:
    (manifest,) = list(root.glob("sweeps/*/sweep.json"))
    return manifest.parent


def _signal_once_started(root: Path, process: subprocess.Popen[str], signum: int) -> None:
    """At start-up: as soon as the first member's process exists (it is still importing torch)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        manifests = list(root.glob("sweeps/*/sweep.json"))
        if manifests and read_json(manifests[0])["members"][0]["job_ids"]:
            process.send_signal(signum)
            return
        time.sleep(0.02)
    raise AssertionError("the sweep never started its first member")


def _logs(sweep_dir: Path) -> dict[str, str]:
    """The end of every member's log, for a failure message (what each attempt said last)."""
    return {path.parent.name: path.read_text(errors="replace")[-1500:] for path in sweep_dir.glob("*/log.txt")}


def _csv_rows(job_dir: Path) -> list[dict[str, str]]:
    path = job_dir / "csv" / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]


def _gone(sweep_dir: Path, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while _left_behind(sweep_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not _left_behind(sweep_dir)


def _left_behind(sweep_dir: Path) -> list[str]:
    """Command lines of live processes that name this sweep (its members and their ranks)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(sweep_dir) in text:
            found.append(text)
    return found


@pytest.mark.skipif(not Path("/proc").exists(), reason="needs /proc to look for processes left behind")
def test_interrupted_sweep_saves_stops_cleanly_and_resumes_exactly(tmp_path, uninterrupted_results):
    sweeps = {case: _start(tmp_path / case, *args) for case, args in CASES.items()}
    for case, (name, phase) in CASES.items():
        if phase == "startup":
            _signal_once_started(tmp_path / case, sweeps[case], getattr(signal, name))
    outputs = {case: process.communicate(timeout=600)[0] for case, process in sweeps.items()}

    before: dict[str, tuple[dict, list[dict[str, str]]]] = {}
    for case, (name, phase) in CASES.items():
        output, sweep_dir = outputs[case], _sweep_dir(tmp_path / case)
        assert "Traceback" not in output, (case, output[-3000:])
        if name == "SIGKILL":
            assert sweeps[case].returncode == -signal.SIGKILL
            assert _gone(sweep_dir), _left_behind(sweep_dir)
            records = read_records(sweep_dir).records  # what status and resume see: nobody wrote the members' end
            assert [r.state for r in records] == ["INTERRUPTED", "NOT_SUBMITTED"], case
        else:
            assert sweeps[case].returncode == 130, (case, output[-3000:])
            assert f"orchestra resume {sweep_dir}" in output.splitlines()[-1], (case, output[-2000:])
            assert _left_behind(sweep_dir) == [], case
            members = read_json(sweep_dir / "sweep.json")["members"]
            assert [m["state"] for m in members] == ["INTERRUPTED", "INTERRUPTED"], (case, members)
        members = read_json(sweep_dir / "sweep.json")["members"]
        assert members[1]["attempts"] == 0, case  # parallelism 1: the second member was never started
        first = read_json(Path(members[0]["job_dir"]) / "results.json")
        assert first["state"] == "INTERRUPTED" and "error" not in first, (case, first)
        if phase == "startup":
            assert "history" not in first, case  # stopped before training: nothing to save, nothing lost
        else:
            assert (Path(members[0]["job_dir"]) / "checkpoints" / "last.ckpt").is_file(), case
            assert first["history"], case  # epoch 0 was validated before the interruption
        before[case] = (first, _csv_rows(Path(members[0]["job_dir"])))

    resumes = {case: subprocess.Popen([*cli_command(), "resume", str(_sweep_dir(tmp_path / case))],
                                      cwd=tmp_path / case, env=subprocess_env(), text=True, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT) for case in CASES}
    resumed_outputs = {case: process.communicate(timeout=600)[0] for case, process in resumes.items()}

    for case in CASES:
        sweep_dir = _sweep_dir(tmp_path / case)
        assert resumes[case].returncode == 0, (case, resumed_outputs[case][-3000:], _logs(sweep_dir))
        members = read_json(sweep_dir / "sweep.json")["members"]
        assert [m["state"] for m in members] == ["COMPLETED", "COMPLETED"], case
        for seed, member in zip(SEEDS, members, strict=True):
            results = read_json(Path(member["job_dir"]) / "results.json")
            reference = uninterrupted_results("simclr", EPOCHS, f"seed={seed}")
            assert [r["step"] for r in results["history"]] == [r["step"] for r in reference["history"]], case
            for key, value in reference["metrics"].items():
                assert results["metrics"][key] == pytest.approx(value, abs=1e-6), (case, seed, key)
        first, rows_before = before[case]
        after = read_json(Path(members[0]["job_dir"]) / "results.json")
        earlier = first.get("history", [])
        assert after["history"][: len(earlier)] == earlier, case  # nothing earlier lost
        assert after["attempts"] == first["attempts"] + 1, case
        rows_after = _csv_rows(Path(members[0]["job_dir"]))
        kept = [{k: v for k, v in row.items() if k in old} for row, old in zip(rows_after, rows_before, strict=False)]
        assert kept == rows_before, case  # the rows written before the interruption are kept, in order
        assert len(rows_after) > len(rows_before), case
        assert _left_behind(sweep_dir) == [], case
