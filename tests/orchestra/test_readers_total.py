"""Readers are total: whatever sweep.json or a member's results.json holds, status, report, resume, cancel and eval
answer with one line naming the bad file (and a fix), never a traceback, and leave that file byte for byte as it was.

Sweeps are fabricated on disk (fabricated_sweeps.py): three COMPLETED local members, so resume never starts a
training run (it is also stubbed to fail the test if it tried).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from fabricated_sweeps import results_of, three_completed

from orchestra.cli.main import main

GOOD = results_of("COMPLETED", 0.5)


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


# Contents of member 0's results.json: not JSON, not an object, or keys of the wrong type.
BAD_RESULTS = {
    "garbage bytes": b"\x00\xff\xfe garbage \x80",
    "empty": b"",
    "truncated": b'{"state": "COMPLETED", "metrics": {"knn/top1": 0.9',
    "a list": b"[1, 2, 3]",
    "a number": b"42",
    "a string": b'"COMPLETED"',
    "null": b"null",
    "nested too deep": b"[" * 100_000,
    "attempts text": _json({**GOOD, "attempts": "x"}),
    "attempts negative": _json({**GOOD, "attempts": -1}),
    "metrics a list": _json({**GOOD, "metrics": [1]}),
    "knn as text": _json({**GOOD, "metrics": {"knn/top1": "0.9"}}),
    "knn a bool": _json({**GOOD, "metrics": {"knn/top1": True}}),
    "wall time null": _json({**GOOD, "wall_time_s": None}),
    "state a number": _json({**GOOD, "state": 5}),
    "state unknown": _json({**GOOD, "state": "BANANA"}),
    "history a dict": _json({**GOOD, "history": {"0": 1}}),
    "history of strings": _json({**GOOD, "history": ["epoch 0"]}),
    "history metrics a list": _json({**GOOD, "history": [{"step": 1, "metrics": [0.5]}]}),
    "history step text": _json({**GOOD, "history": [{"step": "ten", "metrics": {"knn/top1": 0.5}}]}),
    "floors text": _json({**GOOD, "floors": {"raw_pixels/knn_top1": "low"}}),
    "evaluation a list": _json({**GOOD, "evaluation": ["knn"]}),
    "error a list": _json({**results_of("FAILED"), "error": ["boom"]}),
    "divergence text": _json({**results_of("DIVERGED"), "error": "nan", "divergence": "step 3"}),
    "divergence lr text": _json({**results_of("DIVERGED"), "divergence": {"step": 3, "lr": "big"}}),
    "completed with nan": b'{"state": "COMPLETED", "metrics": {"knn/top1": NaN}}',
    "markup in values": _json({**GOOD, "state": "[/]", "error": "[/red] [bold"}),
    "lone surrogate": b'{"state": "FAILED", "error": "bad \\ud800 text", "metrics": {"\\udc80": 1}}',
}


@pytest.fixture()
def sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("COLUMNS", "2000")  # rich wraps at 80 columns in a pipe; a warning must stay one line
    monkeypatch.chdir(tmp_path)

    def no_training(*args, **kwargs):
        raise AssertionError("resume tried to start members")

    monkeypatch.setattr("orchestra.sweep.create.launch_members", no_training)
    return three_completed(tmp_path)


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out + err


def _csv(sweep: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((sweep / "results.csv").read_text().splitlines()))


def _lines_naming(output: str, path: Path) -> list[str]:
    return [line for line in output.splitlines() if str(path) in line]


@pytest.mark.parametrize("content", BAD_RESULTS.values(), ids=BAD_RESULTS.keys())
def test_a_bad_results_file_is_one_warning_and_left_alone(sweep, capsys, content):
    bad = sweep / "000" / "results.json"
    bad.write_bytes(content)
    for command in ("status", "report", "resume", "cancel"):
        code, output = _run(capsys, [command, str(sweep)])
        assert code == 0 and "Traceback" not in output, (command, output)
        assert len(_lines_naming(output, bad)) == 1, (command, output)
        assert bad.read_bytes() == content, command
    code, output = _run(capsys, ["eval", str(sweep / "000")])
    assert code == 2 and output.startswith("error: ") and output.count("\n") == 1, output
    assert str(bad) in output and bad.read_bytes() == content


@pytest.mark.parametrize("content", list(BAD_RESULTS.values())[:3], ids=list(BAD_RESULTS)[:3])
def test_a_member_with_bad_results_keeps_its_row_and_stays_out_of_the_means(sweep, capsys, content):
    (sweep / "000" / "results.json").write_bytes(content)
    code, output = _run(capsys, ["status", str(sweep)])
    rows = [line.split() for line in output.splitlines() if line[:1].isdigit()]
    # Its state comes from the manifest (the local launcher recorded COMPLETED), with no numbers of its own.
    assert [row[:4] for row in rows] == [["0", "method=simclr", "seed=0", "COMPLETED"],
                                         ["1", "method=simclr", "seed=1", "COMPLETED"],
                                         ["2", "method=byol", "seed=0", "COMPLETED"]], output
    assert "0.5000" not in output
    _run(capsys, ["report", str(sweep)])
    first = _csv(sweep)[0]
    assert (first["member"], first["state"], first["knn_top1"]) == ("0", "UNREADABLE", "")
    markdown = (sweep / "report.md").read_text()
    # simclr's mean is seed 1's alone (n=1): 0.7000 and no ± from the unreadable seed 0.
    assert "| simclr | 1 | 1 | COMPLETED | 0.7000 |" in markdown, markdown
    assert "partial report: 1 ended without results" in markdown


# Whole files that are no sweep manifest at all: every command says so in one line and exits 2.
UNREADABLE_MANIFESTS = {
    "garbage bytes": b"\xff\xfe\x00\x01garbage",
    "empty": b"",
    "truncated": b'{"members": [{"index": 0',
    "a list": b"[]",
    "a number": b"7",
    "null": b"null",
    "no members": b'{"sweep_dir": "x"}',
    "members an object": b'{"members": {}}',
    "members a number": b'{"members": 5}',
    "nested too deep": b'{"members": ' + b"[" * 100_000,
    "lone surrogate": b'{"members": [], "launcher": "\\ud800"}',
}


@pytest.mark.parametrize("content", UNREADABLE_MANIFESTS.values(), ids=UNREADABLE_MANIFESTS.keys())
@pytest.mark.parametrize("command", ["status", "report", "resume", "cancel", "eval"])
def test_an_unreadable_manifest_is_one_line_and_exit_2(sweep, capsys, content, command):
    bad = sweep / "sweep.json"
    bad.write_bytes(content)
    code, output = _run(capsys, [command, str(sweep)])
    assert code == 2 and "Traceback" not in output, output
    assert output.startswith("error: ") and output.count("\n") == 1 and str(bad) in output, output
    assert bad.read_bytes() == content


def _member_one(entry: object) -> dict:
    data = json.loads((Path.cwd() / "sweeps" / "2024-01-01_00-00-00" / "sweep.json").read_text())
    data["members"][1] = entry
    return data


def _good_member_one(**changes: object) -> object:
    def build() -> dict:
        member = json.loads((Path.cwd() / "sweeps" / "2024-01-01_00-00-00" / "sweep.json").read_text())["members"][1]
        member.update(changes)
        return {k: v for k, v in member.items() if v is not _DROP}
    return build


_DROP = object()

# Member 1 of sweep.json replaced or damaged; members 0 and 2 stay readable.
BAD_MEMBERS = {
    "a string": lambda: "member one",
    "a number": lambda: 5,
    "empty object": lambda: {},
    "no job_dir": _good_member_one(job_dir=_DROP),
    "empty job_dir": _good_member_one(job_dir=""),
    "attempts text": _good_member_one(attempts="x"),
    "job_ids a number": _good_member_one(job_ids=5),
    "job_ids of numbers": _good_member_one(job_ids=[5]),
    "overrides text": _good_member_one(overrides="method=simclr"),
    "index text": _good_member_one(index="1"),
    "index not its position": _good_member_one(index=7),
    "state a number": _good_member_one(state=3),
    "finished_at a list": _good_member_one(finished_at=[]),
    "job_dir with a NUL": _good_member_one(job_dir="/runs/\x00"),
    "lone surrogate": _good_member_one(overrides=["method=\ud800"]),
}


@pytest.mark.parametrize("entry", BAD_MEMBERS.values(), ids=BAD_MEMBERS.keys())
def test_a_bad_member_entry_is_one_line_the_others_are_shown_and_nothing_is_rewritten(sweep, capsys, entry):
    bad = sweep / "sweep.json"
    content = json.dumps(_member_one(entry()), indent=1).encode()
    bad.write_bytes(content)
    code, output = _run(capsys, ["status", str(sweep)])
    assert code == 0 and "Traceback" not in output, output
    assert [line.split()[0] for line in output.splitlines() if line[:1].isdigit()] == ["0", "2"], output
    assert len(_lines_naming(output, bad)) == 1 and "members[1]" in _lines_naming(output, bad)[0], output
    code, output = _run(capsys, ["report", str(sweep)])
    assert code == 0 and len(_lines_naming(output, bad)) == 1, output
    assert [row["member"] for row in _csv(sweep)] == ["0", "2"]
    # Acting would rewrite the manifest and drop the entry: resume and cancel refuse, in one more line.
    for command in ("resume", "cancel"):
        code, output = _run(capsys, [command, str(sweep)])
        assert code == 2 and "Traceback" not in output and len(_lines_naming(output, bad)) == 1, output
        assert output.splitlines()[-1].startswith("error: ") and "nothing" in output.splitlines()[-1], output
    code, output = _run(capsys, ["eval", str(sweep)])
    assert code == 1 and "Traceback" not in output and len(_lines_naming(output, bad)) == 1, output
    assert bad.read_bytes() == content


BAD_TOP_LEVEL = {
    "launcher a number": {"launcher": 5},
    "swept_keys text": {"swept_keys": "method"},
    "launcher_settings a list": {"launcher_settings": ["local"]},
    "no command": {"command": _DROP},
}


@pytest.mark.parametrize("change", BAD_TOP_LEVEL.values(), ids=BAD_TOP_LEVEL.keys())
def test_a_bad_top_level_field_is_one_line_and_every_member_is_shown(sweep, capsys, change):
    bad = sweep / "sweep.json"
    data = {**json.loads(bad.read_text()), **change}
    content = json.dumps({k: v for k, v in data.items() if v is not _DROP}).encode()
    bad.write_bytes(content)
    code, output = _run(capsys, ["status", str(sweep)])
    assert code == 0 and "Traceback" not in output and len(_lines_naming(output, bad)) == 1, output
    assert [line.split()[0] for line in output.splitlines() if line[:1].isdigit()] == ["0", "1", "2"], output
    code, output = _run(capsys, ["resume", str(sweep)])
    assert code == 2 and len(_lines_naming(output, bad)) == 1, output
    assert bad.read_bytes() == content


def test_a_sound_sweep_reads_without_a_warning(sweep, capsys):
    # The other tests' single warning line must come from the damage, not from the fabricated sweep.
    for command in ("status", "report", "resume", "cancel"):
        code, output = _run(capsys, [command, str(sweep)])
        assert code == 0 and "warning" not in output and "Traceback" not in output, (command, output)
