"""A search sweep's trials as ``orchestra status`` shows them: the study's journal and each trial's results.json.

Reads Optuna and JSON only (no torch). The study says a trial's state, parameters, value and owner; results.json
says where a pruned trial stopped (``pruned_at``) and the job's own state (e.g. PREEMPTED while it waits for its
worker's requeue).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestra.errors import UserError
from orchestra.jobstate.results import read_results
from orchestra.search.plan import trial_dir


@dataclass
class TrialRow:
    number: int
    state: str  # the study's: RUNNING, COMPLETE, PRUNED, FAIL (WAITING never happens here)
    params: dict[str, Any]
    value: float | None  # COMPLETE: the objective; otherwise the last value reported to the pruner
    worker: int | None
    job_state: str  # results.json's state, "" before the job wrote one
    pruned_at: dict[str, int] | None = None
    error: str = ""
    results: dict[str, Any] = field(default_factory=dict)


def read_trials(sweep_dir: Path | str, section: dict[str, Any]) -> list[TrialRow]:
    """Every trial asked so far, by number."""
    from orchestra.search.study import JOURNAL, load

    if not (Path(sweep_dir) / JOURNAL).is_file():
        return []
    rows = []
    for trial in load(sweep_dir, section).get_trials(deepcopy=False):
        try:
            results = read_results(trial_dir(sweep_dir, trial.number) / "results.json")
        except UserError as err:
            results = {"error": str(err)}
        reported = trial.intermediate_values
        value = trial.value if trial.value is not None else (reported[max(reported)] if reported else None)
        pruned_at = results.get("pruned_at")
        if pruned_at is None and trial.state.name == "PRUNED" and reported:
            pruned_at = {"epoch": max(reported)}
        rows.append(TrialRow(number=trial.number, state=trial.state.name, params=dict(trial.params), value=value,
                             worker=trial.user_attrs.get("worker"), job_state=str(results.get("state") or ""),
                             pruned_at=pruned_at, error=str(results.get("error") or ""), results=results))
    return rows


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def trials_text(rows: list[TrialRow], section: dict[str, Any]) -> str:
    """The trials table of ``orchestra status``, plain aligned text."""
    metric = str(section["objective"]["metric"])
    keys = list(section.get("space") or {})
    head = ["trial", "state", "job", "worker", *keys, metric, "pruned at"]
    table = [head]
    for row in rows:
        pruned = ""
        if row.pruned_at:
            step = row.pruned_at.get("step")
            pruned = f"epoch {row.pruned_at.get('epoch')}" + (f" (step {step})" if step is not None else "")
        shown = "" if row.value is None else f"{row.value:.4f}"
        table.append([str(row.number), row.state, row.job_state, "" if row.worker is None else str(row.worker),
                      *(_value(row.params[k]) if k in row.params else "" for k in keys), shown, pruned])
    widths = [max(len(line[i]) for line in table) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary_line(rows: list[TrialRow], section: dict[str, Any], stopped: bool) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    states = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    best = [r for r in rows if r.state == "COMPLETE" and r.value is not None]
    line = f"trials: {len(rows)} of {section['trials']} asked" + (f" ({states})" if states else "")
    if best:
        pick = max if section["objective"]["direction"] == "maximize" else min
        top = pick(best, key=lambda r: r.value)
        line += f"; best: trial {top.number}, {section['objective']['metric']} {top.value:.4f}"
    if stopped:
        line += "; stopped by orchestra cancel (orchestra resume continues it)"
    return line
