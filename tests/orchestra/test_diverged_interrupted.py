"""DIVERGED (the loss became non-finite) and INTERRUPTED (stopped by a person, last.ckpt saved) as member states:
how records merges them, how status shows them, what resume re-runs, and how the report lists them.

Sweeps are fabricated on disk (fabricated_sweeps.py); resume's launch is stubbed, so nothing trains.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from fabricated_sweeps import DEAD_LOCAL_JOB, make_sweep, results_of

from launch.manifest import Member
from orchestra.cli.main import main
from orchestra.sweep.control import _ANSI, STATE_COLORS, status_text
from orchestra.sweep.records import ACTIVE, TERMINAL, member_state, refresh, scheduler_view

ERROR = "loss became non-finite at step 37 (epoch 1, lr 1e+06); lower optim.lr"
DIVERGED = results_of("DIVERGED", error=ERROR, metrics={"knn/top1": 0.9, "probe/top1": 0.9},
                      divergence={"step": 37, "epoch": 1, "lr": 1e6, "what": "loss"})


def _slurm(state: str = "PENDING") -> Member:
    return Member(index=0, overrides=["method=simclr"], job_dir="/nonexistent", state=state, job_ids=["7_0"])


def _local(state: str) -> Member:
    return Member(index=0, overrides=["method=simclr"], job_dir="/nonexistent", state=state,
                  job_ids=[DEAD_LOCAL_JOB])


def test_under_slurm_the_results_files_diverged_wins_over_the_schedulers_failed():
    # The job body exits 65 after a divergence: sacct calls the job FAILED.
    assert member_state(_slurm(), {"7_0": {"state": "FAILED"}}, {"state": "DIVERGED"}) == "DIVERGED"
    assert member_state(_slurm(), {"7_0": {"state": "FAILED"}}, {"state": "RUNNING"}) == "FAILED"
    # Run again with --diverged: while queued or running, the old file's DIVERGED is history.
    assert member_state(_slurm(), {"7_0": {"state": "PENDING"}}, {"state": "DIVERGED"}) == "PENDING"
    assert member_state(_slurm(), {"7_0": {"state": "RUNNING"}}, {"state": "DIVERGED"}) == "RUNNING"


def test_under_slurm_an_interrupted_job_reads_interrupted():
    assert member_state(_slurm(), {"7_0": {"state": "COMPLETED"}}, {"state": "INTERRUPTED"}) == "INTERRUPTED"


def test_local_members_read_what_the_launcher_recorded():
    for state in ("INTERRUPTED", "DIVERGED"):
        member = _local(state)
        assert member_state(member, scheduler_view([member]), {"state": "RUNNING"}) == state


def test_a_local_member_whose_end_went_unrecorded_reads_its_own_results():
    # Ctrl-C ended the sweep process too, before it wrote the member's end: the job's own word stands.
    member = _local("RUNNING")
    for own in ("INTERRUPTED", "DIVERGED"):
        assert member_state(member, scheduler_view([member]), {"state": own}) == own
    assert member_state(member, scheduler_view([member]), {"state": "RUNNING"}) == "FAILED"  # kill -9


def test_a_local_failed_exit_with_a_diverged_results_file_reads_diverged():
    member = _local("FAILED")
    assert member_state(member, scheduler_view([member]), {"state": "DIVERGED"}) == "DIVERGED"


def test_both_states_are_terminal_ends():
    assert {"DIVERGED", "INTERRUPTED"} <= TERMINAL and not {"DIVERGED", "INTERRUPTED"} & ACTIVE


@pytest.fixture()
def mixed_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Members 0..4: COMPLETED, DIVERGED, INTERRUPTED, FAILED, PREEMPTED, as the local launcher records them."""
    monkeypatch.setenv("COLUMNS", "2000")
    monkeypatch.chdir(tmp_path)
    return make_sweep(tmp_path, [
        (["method=simclr", "seed=0"], "COMPLETED", results_of("COMPLETED", 0.5)),
        (["method=simclr", "seed=1"], "DIVERGED", DIVERGED),
        (["method=simclr", "seed=2"], "INTERRUPTED", results_of("INTERRUPTED")),
        (["method=byol", "seed=0"], "FAILED", results_of("FAILED", error="RuntimeError: boom")),
        (["method=byol", "seed=1"], "PREEMPTED", results_of("PREEMPTED")),
    ])


def test_status_shows_both_states_in_their_colours_and_the_divergence(mixed_sweep, capsys):
    assert main(["status", str(mixed_sweep)]) == 0
    out = capsys.readouterr().out
    states = {line.split()[0]: line.split()[3] for line in out.splitlines() if line[:1].isdigit()}
    assert states == {"0": "COMPLETED", "1": "DIVERGED", "2": "INTERRUPTED", "3": "FAILED", "4": "PREEMPTED"}
    assert f"member 1 diverged: {ERROR}" in out.splitlines()
    assert "member 3 failed: RuntimeError: boom" in out.splitlines()
    assert not any(line.startswith("member 2") for line in out.splitlines())  # nothing went wrong there

    lines = status_text(mixed_sweep, refresh(mixed_sweep), color=True).splitlines()
    assert STATE_COLORS["DIVERGED"] == STATE_COLORS["FAILED"] == "red"
    assert lines[4].startswith(_ANSI["red"]) and "DIVERGED" in lines[4]
    assert lines[5].startswith(_ANSI["yellow"]) and "INTERRUPTED" in lines[5]


@pytest.fixture()
def launched(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The members each resume hands to the launcher (which here starts nothing)."""
    calls: list[list[int]] = []

    def launch(sweep_dir, members, settings, on_end, entry=None):
        calls.append([member.index for member in members])
        return 0

    monkeypatch.setattr("orchestra.sweep.create.launch_members", launch)
    return calls


def test_resume_reruns_interrupted_and_failed_but_not_diverged(mixed_sweep, launched, capsys):
    assert main(["resume", str(mixed_sweep)]) == 0
    out = capsys.readouterr().out
    assert launched == [[2, 3, 4]]
    skipped = [line for line in out.splitlines() if "DIVERGED" in line]
    assert len(skipped) == 1 and skipped[0].startswith("not resuming 1 DIVERGED member(s): 1 ")
    assert "--diverged" in skipped[0]


def test_resume_diverged_reruns_them_too(mixed_sweep, launched, capsys):
    assert main(["resume", "--diverged", str(mixed_sweep)]) == 0
    assert launched == [[1, 2, 3, 4]]
    assert "not resuming" not in capsys.readouterr().out


def test_resume_with_only_diverged_members_left_starts_nothing(tmp_path, launched, capsys):
    sweep_dir = make_sweep(tmp_path, [(["seed=0"], "COMPLETED", results_of("COMPLETED")),
                                      (["seed=1"], "DIVERGED", DIVERGED)])
    assert main(["resume", str(sweep_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert launched == [] and out[0].startswith("not resuming 1 DIVERGED member(s): 1 ")
    assert out[1].startswith("nothing to resume") and len(out) == 2


def test_resume_refuses_unknown_flags(mixed_sweep, launched, capsys):
    assert main(["resume", "--divergd", str(mixed_sweep)]) == 2
    assert "usage: orchestra resume [--diverged] [SWEEP_DIR]" in capsys.readouterr().err and launched == []


def test_report_lists_diverged_members_like_failed_ones_and_never_averages_them(mixed_sweep, capsys):
    assert main(["report", str(mixed_sweep)]) == 0
    out = capsys.readouterr().out
    assert f"diverged: member 1 (method=simclr seed=1): {ERROR}" in out
    assert "partial report: 2 member(s) not finished yet, 2 ended without results" in out  # INTERRUPTED, PREEMPTED

    markdown = (mixed_sweep / "report.md").read_text()
    # simclr's mean is seed 0's 0.5 alone: the diverged seed's 0.9 is in no mean.
    assert "| simclr | 0 | 1 | COMPLETED | 0.5000 |" in markdown, markdown
    assert "| simclr | 1 | — | DIVERGED | — |" in markdown and "| simclr | 2 | — | INTERRUPTED | — |" in markdown
    assert f"- member 1 (method=simclr seed=1) DIVERGED: {ERROR}" in markdown
    assert "- member 3 (method=byol seed=0) FAILED: RuntimeError: boom" in markdown

    html = (mixed_sweep / "report.html").read_text()
    assert '<tr class="DIVERGED">' in html and "tr.FAILED td, tr.DIVERGED td" in html
    assert f"member 1 (method=simclr seed=1) DIVERGED: {ERROR}" in html

    rows = {row["member"]: row for row in csv.DictReader((mixed_sweep / "results.csv").read_text().splitlines())}
    assert (rows["1"]["state"], rows["1"]["knn_top1"], rows["1"]["error"]) == ("DIVERGED", "", ERROR)
    assert rows["2"]["state"] == "INTERRUPTED"


def test_a_diverged_results_file_as_the_job_writes_it_is_sound(tmp_path):
    from orchestra.jobstate.results import read_checked_results

    (tmp_path / "results.json").write_text(json.dumps(DIVERGED))
    assert read_checked_results(tmp_path / "results.json")["divergence"]["step"] == 37
