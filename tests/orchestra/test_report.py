"""`orchestra report`: the table, files and figures of a finished local sweep, failed and unreadable members, and
one-line answers for directories that are not sweeps.

The sweeps are real (conftest.py): 3 methods x 2 seeds all completed, and a sweep where one seed's training raised.
Expected numbers are computed here from the members' own results files.
"""

from __future__ import annotations

import base64
import csv
import json
import shutil
import statistics
import struct
import subprocess
import sys
from pathlib import Path

from orchestra_testkit import read_json, run_cli, run_cli_concurrently, subprocess_env

from orchestra.jobstate.results import EVALUATION_PROTOCOL

WIDE = subprocess_env(COLUMNS="220")  # rich wraps at 80 columns in a pipe; wide enough that no cell wraps
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _report(sweep_dir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`orchestra report` through the CLI entry point, also telling whether torch was imported on the way."""
    code = ("import sys; from orchestra.cli import main; code = main(sys.argv[1:]); "
            "print('TORCH-IMPORTED' if 'torch' in sys.modules else 'NO-TORCH'); sys.exit(code)")
    return subprocess.run([sys.executable, "-c", code, "report", str(sweep_dir)], cwd=cwd, env=WIDE,
                          capture_output=True, text=True, timeout=300)


def _table_rows(stdout: str) -> list[list[str]]:
    """The cells of every body line of the rich table (lines between │ borders)."""
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in stdout.splitlines() if line.count("│") >= 3]


def _markdown_rows(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| #")]


def _members(sweep_dir: Path) -> list[dict]:
    """Each member's manifest entry with its results file and swept values."""
    members = read_json(sweep_dir / "sweep.json")["members"]
    for member in members:
        member["results"] = read_json(Path(member["job_dir"]) / "results.json")
        member["values"] = dict(o.split("=", 1) for o in member["overrides"])
    return members


def _mean_std(values: list[float]) -> str:
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def test_table_shows_mean_and_std_over_seeds_equal_to_the_results_files(finished_sweep, tmp_path):
    sweep_dir, sweep_run = finished_sweep
    result = _report(sweep_dir, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "NO-TORCH" in result.stdout  # a report never pays for (or needs) torch

    members = _members(sweep_dir)
    rows = {row[0]: row for row in _table_rows(result.stdout)}  # body lines only: rich draws the header with ┃
    md_rows = {row[0]: row for row in _markdown_rows((sweep_dir / "report.md").read_text())}
    probe_means = {}
    for method in ("simclr", "byol", "vicreg"):
        runs = [m["results"] for m in members if m["values"]["method"] == method]
        assert [r["state"] for r in runs] == ["COMPLETED", "COMPLETED"]
        knn = [r["metrics"]["knn/top1"] for r in runs]
        probe = [r["metrics"]["probe/top1"] for r in runs]
        device_hours = statistics.fmean(r["device_hours"] for r in runs)
        probe_means[method] = statistics.fmean(probe)
        # columns: method, seed, n, state, kNN, probe, wall time, device-h
        for table in (rows, md_rows):
            row = table[method]
            assert row[1:6] == ["0,1", "2", "COMPLETED", _mean_std(knn), _mean_std(probe)], row
            assert row[7] == f"{device_hours:.4f}", row
    best = max(probe_means, key=probe_means.get)
    assert f"best configuration: method={best} — probe top-1 " in result.stdout
    # The no-training floors stay beside the methods.
    assert "random-init backbone (no training)" in rows and rows["random-init backbone (no training)"][3] == "floor"
    assert "raw pixels (no network)" in rows
    # The protocol is stated, in the terminal and in the files.
    for text in (result.stdout.replace("\n", " "), (sweep_dir / "report.md").read_text()):
        assert "reported value: last validation" in text
        assert EVALUATION_PROTOCOL["knn"][:40] in text
    # The local launcher printed the same table at the end of the sweep itself.
    assert "best configuration: method=" in sweep_run.stdout


def test_results_record_device_hours_resources_and_peak_memory(finished_sweep):
    for member in _members(finished_sweep[0]):
        results = member["results"]
        # Locally: wall time x trainer.devices (1) x num_nodes (1), counted over the same attempt as the wall time.
        assert results["resources"] == {"kind": "cpu", "count": 1, "nodes": 1,
                                        "source": "trainer.devices x trainer.num_nodes"}
        assert abs(results["device_hours"] - results["wall_time_s"] / 3600) < 0.5 / 3600
        assert results["peak_memory_source"].startswith("ru_maxrss")
        assert 100 < results["peak_memory_mb"] < 8000  # a process holding torch and a CNN: hundreds of MiB


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_files_csv_and_embedded_figures(finished_sweep):
    sweep_dir, _ = finished_sweep
    html = (sweep_dir / "report.html").read_text()
    for name in ("learning_curves.png", "final_accuracy.png"):
        data = (sweep_dir / name).read_bytes()
        width, height = _png_size(data)
        assert len(data) > 1024 and width > 300 and height > 200, (name, len(data), width, height)
        assert f"data:image/png;base64,{base64.b64encode(data).decode()}" in html  # self-contained: the same bytes
    assert 'src="learning_curves.png"' not in html
    assert "best configuration:" in html and "evaluation protocol" in html.lower()
    assert not [p.name for p in sweep_dir.glob(".*.tmp")]  # atomic writes leave no temporary files

    with open(sweep_dir / "results.csv", newline="") as handle:
        lines = list(csv.DictReader(handle))
    members = _members(sweep_dir)
    assert len(lines) == len(members) == 6
    for line, member in zip(lines, members, strict=True):
        assert (line["method"], line["seed"], line["state"]) == (member["values"]["method"], member["values"]["seed"],
                                                                 "COMPLETED")
        assert float(line["knn_top1"]) == member["results"]["metrics"]["knn/top1"]
        assert float(line["probe_top1"]) == member["results"]["metrics"]["probe/top1"]
        assert float(line["device_hours"]) == member["results"]["device_hours"]


def test_failed_member_shows_failed_and_stays_out_of_the_mean(sweep_with_failure, tmp_path):
    sweep_dir, _ = sweep_with_failure
    members = _members(sweep_dir)
    done, failed = members[0]["results"], members[1]["results"]
    assert (done["state"], failed["state"]) == ("COMPLETED", "FAILED")
    assert "injected training failure" in failed["error"]

    result = _report(sweep_dir, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # Only the seed is swept, so the configuration column names the method the members share.
    simclr_rows = [row for row in _table_rows(result.stdout) if row[0] == "method=simclr"]
    # columns: configuration, seed, n, state, kNN, probe, wall time, device-h
    assert len(simclr_rows) == 2, result.stdout
    completed, failed_row = simclr_rows
    # The mean is the completed seed's own number: n=1, no ± (the failed seed is not averaged in as a zero).
    assert completed[1:6] == ["0", "1", "COMPLETED", f"{done['metrics']['knn/top1']:.4f}",
                              f"{done['metrics']['probe/top1']:.4f}"]
    assert failed_row[1:6] == ["1", "—", "FAILED", "—", "—"]
    assert "failed: member 1 (seed=1): RuntimeError: injected training failure" in result.stdout
    md = (sweep_dir / "report.md").read_text()
    assert "| method=simclr | 1 | — | FAILED | — | — |" in md
    with open(sweep_dir / "results.csv", newline="") as handle:
        failed_line = list(csv.DictReader(handle))[1]
    assert failed_line["state"] == "FAILED" and failed_line["knn_top1"] == failed_line["probe_top1"] == ""


def test_corrupted_results_are_skipped_with_a_warning_and_a_queued_member_marks_a_partial_report(
        finished_sweep, tmp_path):
    sweep_dir = Path(shutil.copytree(finished_sweep[0], tmp_path / "copy"))
    members = _members(sweep_dir)
    corrupted = sweep_dir / Path(members[0]["job_dir"]).name / "results.json"
    corrupted.write_text('{"state": "COMPLETED", "metrics": {"knn/top1": 0.9')  # cut off mid-write
    # Member 5 as a local member still waiting for a free slot looks on disk: PENDING in the manifest, no process
    # id, no results yet (status calls that NOT_SUBMITTED).
    (sweep_dir / Path(members[5]["job_dir"]).name / "results.json").unlink()
    manifest = read_json(sweep_dir / "sweep.json")
    manifest["members"][5].update(state="PENDING", job_ids=[])
    (sweep_dir / "sweep.json").write_text(json.dumps(manifest))

    result = _report(sweep_dir, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(corrupted) in warnings[0], result.stdout
    rows = _table_rows(result.stdout)
    simclr = [row for row in rows if row[0] == "simclr"]
    # The other seed alone makes the simclr mean; the unreadable member is listed, without numbers.
    knn_seed1 = members[1]["results"]["metrics"]["knn/top1"]
    assert simclr[0][1:5] == ["1", "1", "COMPLETED", f"{knn_seed1:.4f}"]
    assert simclr[1][1:5] == ["0", "—", "UNREADABLE", "—"]
    vicreg = [row for row in rows if row[0] == "vicreg"]
    assert [row[3] for row in vicreg] == ["COMPLETED", "NOT_SUBMITTED"]
    assert "partial report: 1 member(s) not finished yet" in result.stdout
    # The copy reported its own members, not the original sweep's.
    assert str(sweep_dir) in (sweep_dir / "report.md").read_text()

    status = run_cli(["status", str(sweep_dir)], cwd=tmp_path, env=WIDE)
    assert status.returncode == 0 and "Traceback" not in status.stderr, status.stderr[-3000:]
    warnings = [line for line in status.stdout.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: member 0: ") and str(corrupted) in warnings[0]


def test_a_job_moves_an_unreadable_results_file_aside_and_completes(finished_sweep, tmp_path):
    member = _members(finished_sweep[0])[0]
    job_dir = Path(shutil.copytree(member["job_dir"], tmp_path / "member"))
    cut_off = '{"state": "COMPLETED", "attempts": 1, "metr'
    (job_dir / "results.json").write_text(cut_off)
    done = subprocess.run([sys.executable, "-m", "orchestra.job", str(job_dir)], env=subprocess_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    aside = list(job_dir.glob("results.json.unreadable-*"))
    assert len(aside) == 1 and aside[0].read_text() == cut_off  # kept byte for byte
    assert f"moved it to {aside[0].name}" in done.stdout
    assert read_json(job_dir / "results.json")["state"] == "COMPLETED"


def test_unknown_and_empty_directories_get_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    results = run_cli_concurrently({
        "unknown": (["report", str(tmp_path / "nowhere")], tmp_path, None),
        "empty": (["report", str(tmp_path / "empty")], tmp_path, None),
        "no sweeps yet": (["report"], tmp_path, None),
    })
    for name, result in results.items():
        assert result.returncode == 2, (name, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, result.stderr)
    assert "nowhere does not exist" in results["unknown"].stderr
    assert "empty is empty, so it is not a sweep directory" in results["empty"].stderr
    assert "no sweep found" in results["no sweeps yet"].stderr


def test_wandb_flag_writes_the_local_report_and_answers_in_one_line(sweep_with_failure, tmp_path):
    sweep_dir = Path(shutil.copytree(sweep_with_failure[0], tmp_path / "copy"))
    result = run_cli(["report", str(sweep_dir), "--wandb"], cwd=tmp_path, env=WIDE)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (sweep_dir / "report.html").is_file()
    # Offline (no login here): one line saying what it needs, after the local report was written.
    assert result.stdout.strip().splitlines()[-1].startswith("wandb report:"), result.stdout[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
