"""`orchestra report` on a search sweep: the trials ranked by objective, the best trial and the command that
reproduces it, pruning's saving by its stated formula, the history and importance PNGs, and no torch import.

The sweep is fabricated with optuna's own journal storage and real results files (fabricated_sweeps.py), so the
numbers below are known exactly.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from fabricated_sweeps import make_search_sweep
from orchestra_testkit import subprocess_env
from rich.console import Console

from orchestra.reporting import print_report
from orchestra.reporting.search_plots import MIN_COMPLETE
from orchestra.reporting.search_summary import build_search

LR, TEMP = "optim.lr", "module.simclr_loss.temperature"
TRIALS = [dict(lr=0.01, temperature=0.1, state="COMPLETED", value=0.80),
          dict(lr=0.001, temperature=0.5, state="PRUNED", value=0.30, epoch=1, step=20),  # 2 of 10 epochs run
          dict(lr=0.05, temperature=0.2, state="COMPLETED", value=0.85),
          dict(lr=0.0002, temperature=0.9, state="PRUNED", value=0.20, epoch=3, step=40, device_hours=0.06),
          dict(lr=0.02, temperature=0.3, state="COMPLETED", value=0.70),
          dict(lr=0.003, temperature=0.6, state="COMPLETED", value=0.75),
          dict(lr=0.004, temperature=0.65, state="FAILED"),
          dict(lr=0.005, temperature=0.7, state="PENDING")]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def search_sweep(tmp_path_factory) -> Path:
    sweep_dir = make_search_sweep(tmp_path_factory.mktemp("search"), TRIALS, max_epochs=10)
    console = Console(record=True, width=240)
    print_report(sweep_dir, console)
    (sweep_dir / "terminal.txt").write_text(console.export_text())
    return sweep_dir


def _best_from_results_files(sweep_dir: Path) -> tuple[int, dict]:
    """The best COMPLETED trial read straight from trials/*/results.json, without the report's code."""
    done = []
    for path in sorted((sweep_dir / "trials").glob("*/results.json")):
        results = json.loads(path.read_text())
        if results["state"] == "COMPLETED":
            done.append((results["search"]["objective"]["value"], results["search"]["trial"],
                         results["search"]["params"]))
    value, number, params = max(done)
    return number, params


def test_trials_are_ranked_by_objective_then_pruned_then_the_rest(search_sweep):
    report = build_search(search_sweep)
    # completed by probe top-1 descending, pruned by their value when pruned, then failed and pending by number
    assert [t.number for t in report.ranked] == [2, 0, 5, 4, 1, 3, 6, 7]
    assert [t.state for t in report.ranked] == ["COMPLETED"] * 4 + ["PRUNED"] * 2 + ["FAILED", "PENDING"]
    headers = report.headers()
    assert headers[:4] == ["trial", "state", LR, TEMP]
    cells = report.cells()
    assert cells[0][:5] == ["2", "COMPLETED", "0.05", "0.2", "0.8500"]
    assert cells[4][headers.index("pruned at epoch/step")] == "1/20"
    assert cells[4][4] == "(0.3000 when pruned)"
    assert cells[7][4] == "—" and cells[7][-1] == "—"  # pending: asked, never started
    # the terminal shows rows in the same order
    text = (search_sweep / "terminal.txt").read_text()
    positions = [text.index(f"│ {n} ") for n in (2, 0, 5, 4, 1, 3, 6, 7)]
    assert positions == sorted(positions)


def test_best_trial_equals_the_best_in_the_results_files(search_sweep):
    number, params = _best_from_results_files(search_sweep)
    report = build_search(search_sweep)
    assert report.best.number == number == 2
    assert report.best.params == params == {LR: 0.05, TEMP: 0.2}
    assert report.best_text() == f"best trial: 2 — probe/top1 0.8500 with {LR}=0.05, {TEMP}=0.2"
    # the sweep's fixed overrides and the trial's parameters; nothing of the search itself
    assert report.reproduce_text() == f"orchestra train method=simclr data.train_limit=400 {LR}=0.05 {TEMP}=0.2"
    markdown = (search_sweep / "report.md").read_text()
    assert f"**{report.best_text()}**" in markdown and report.reproduce_text() in markdown
    assert report.reproduce_text() in (search_sweep / "terminal.txt").read_text().replace("\n", "")


def test_pruned_count_and_device_hours_saved_by_the_stated_formula(search_sweep):
    report = build_search(search_sweep)
    # trial 1: 2 epochs run of 10, 0.02 device-h -> 8 x 0.01; trial 3: 4 of 10, 0.06 device-h -> 6 x 0.015
    assert report.saving.pruned == 2 and report.saving.unmeasured == 0
    assert report.saving.epochs == 14
    assert report.saving.device_hours == pytest.approx(8 * 0.01 + 6 * 0.015)  # 0.17
    assert report.saving.steps == pytest.approx(8 * 10 + 6 * 10)  # 10 steps per epoch in both
    line = "pruned trials: 2; device-hours saved by pruning: 0.1700 (14 epochs, about 140 steps not run)"
    assert report.pruning_text() == line
    markdown = (search_sweep / "report.md").read_text()
    assert line in markdown
    assert "(trainer.max_epochs - epochs run) x (the trial's device-hours / epochs run)" in markdown
    assert line in (search_sweep / "terminal.txt").read_text().replace("\n", "")


def test_history_and_importance_pngs_are_written_and_embedded(search_sweep):
    from matplotlib.image import imread

    markdown = (search_sweep / "report.md").read_text()
    html = (search_sweep / "report.html").read_text()
    for name in ("optimization_history.png", "param_importance.png"):
        png = (search_sweep / name).read_bytes()
        assert png.startswith(PNG_MAGIC)
        height, width, _ = imread(search_sweep / name).shape
        assert height > 200 and width > 400
        assert f"![{name}]({name})" in markdown
        assert base64.b64encode(png).decode("ascii") in html  # the same bytes, inline
    # four completed trials: PED-ANOVA ranks both parameters, importances sum to 1
    lines = [line for line in markdown.splitlines() if line.startswith(f"- {LR}: ") or line.startswith(f"- {TEMP}: ")]
    assert len(lines) == 2 and sum(float(line.rsplit(" ", 1)[1]) for line in lines) == pytest.approx(1.0, abs=2e-3)
    rows = (search_sweep / "results.csv").read_text().splitlines()
    assert rows[0].startswith(f"{LR},{TEMP},trial,state,objective") and rows[1].split(",")[2:5] == ["2", "COMPLETED",
                                                                                                     "0.85"]


def test_too_few_completed_trials_give_a_line_not_an_importance(tmp_path):
    sweep_dir = make_search_sweep(tmp_path, TRIALS[:4])  # two completed, two pruned
    print_report(sweep_dir, Console(record=True, width=200))
    markdown = (sweep_dir / "report.md").read_text()
    assert (f"- parameter importance needs >= {MIN_COMPLETE} COMPLETED trials with their parameters in the journal; "
            f"this study has 2") in markdown
    assert (sweep_dir / "param_importance.png").read_bytes().startswith(PNG_MAGIC)


def test_minimize_ranks_the_lowest_first(tmp_path):
    trials = [dict(lr=0.01, temperature=0.1, state="COMPLETED", value=0.9),
              dict(lr=0.02, temperature=0.2, state="COMPLETED", value=0.4),
              dict(lr=0.03, temperature=0.3, state="PRUNED", value=1.5, epoch=0, step=10)]
    report = build_search(make_search_sweep(tmp_path, trials, metric="train/loss", direction="minimize"))
    assert [t.number for t in report.ranked] == [1, 0, 2] and report.best.objective == 0.4


def test_report_of_a_search_sweep_never_imports_torch(search_sweep, tmp_path):
    code = ("import sys\nfrom orchestra.cli import main\ncode = main(['report', sys.argv[1]])\n"
            "print('AFTER', code, 'torch' in sys.modules, 'lightning' in sys.modules, 'optuna' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code, str(search_sweep)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, env=subprocess_env(COLUMNS="200"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "AFTER 0 False False True" in result.stdout, result.stdout[-2000:]
