"""The content of a search sweep's report, computed once: the trials ranked by objective, the best configuration
and the command that reproduces it, and what pruning saved. Every output format prints these same strings.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from orchestra.reporting.search_collect import SearchRows, TrialRow, collect_search
from orchestra.reporting.summary import DASH, duration, hours

SAVED_FORMULA = ("device-hours saved by pruning = sum over pruned trials of (trainer.max_epochs - epochs run) x "
                 "(the trial's device-hours / epochs run); epochs run = the pruning validation's epoch index + 1. "
                 "A trial's device-hours include its start-up (data, floors), so this slightly overstates the saving")
# Overrides of the sweep command that configure the search, not a trial: never part of a reproducing command.
SEARCH_FLAGS = ("-m", "--multirun")


@dataclass
class Saving:
    pruned: int
    epochs: float  # epochs not run, summed over pruned trials
    steps: float  # steps not run (epochs x the trial's steps per epoch)
    device_hours: float
    unmeasured: int  # pruned trials without the numbers the formula needs


def _rank_key(direction: str):
    sign = -1.0 if direction == "maximize" else 1.0

    def key(trial: TrialRow) -> tuple:
        # completed by objective, then pruned by where they stopped, then the rest by number
        if trial.objective is not None:
            return (0, sign * trial.objective, trial.number)
        if trial.state == "PRUNED":
            last = trial.last_value
            return (1, sign * last if last is not None else float("inf"), trial.number)
        return (2, 0.0, trial.number)

    return key


def pruning_saving(trials: list[TrialRow]) -> Saving:
    saving = Saving(pruned=0, epochs=0.0, steps=0.0, device_hours=0.0, unmeasured=0)
    for trial in trials:
        if trial.state != "PRUNED":
            continue
        saving.pruned += 1
        run = trial.epochs_run
        if run is None or trial.max_epochs is None or trial.device_hours is None or run <= 0:
            saving.unmeasured += 1
            continue
        left = max(0.0, trial.max_epochs - run)
        saving.epochs += left
        saving.device_hours += left * trial.device_hours / run
        step = (trial.pruned_at or {}).get("step")
        if step is not None:
            saving.steps += left * float(step) / run
    return saving


def _value(value: object) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def reproduce_command(rows: SearchRows, trial: TrialRow) -> str:
    """``orchestra train`` with the sweep's fixed overrides and the trial's parameters, written as the worker wrote
    them into the trial's config (``override_text``); nothing of the search itself."""
    from orchestra.search.space import override_text

    fixed = rows.spec.get("fixed")
    if not isinstance(fixed, list):  # an older manifest: the sweep's command line, minus what was searched
        fixed = rows.command[2:] if rows.command[:2] == ["orchestra", "sweep"] else rows.command[1:]
    kept = []
    for text in map(str, fixed):
        key = text.split("=", 1)[0].lstrip("+~")
        if text in SEARCH_FLAGS or key in trial.params or key == "search" or key.startswith("search."):
            continue
        kept.append(text)
    added = set(rows.spec.get("added") or [])
    order = list(rows.spec.get("space") or {}) if isinstance(rows.spec.get("space"), dict) else []
    keys = [k for k in order if k in trial.params] + [k for k in trial.params if k not in order]
    params = [override_text(key, trial.params[key], key in added) for key in keys]
    return " ".join(shlex.quote(part) for part in ["orchestra", "train", *kept, *params])


@dataclass
class SearchReport:
    rows: SearchRows
    ranked: list[TrialRow]
    saving: Saving

    @property
    def sweep_dir(self) -> Path:
        return self.rows.sweep_dir

    @property
    def best(self) -> TrialRow | None:
        return self.ranked[0] if self.ranked and self.ranked[0].objective is not None else None

    @property
    def param_keys(self) -> list[str]:
        space = self.rows.spec.get("space")
        keys = list(space) if isinstance(space, dict) else []
        return keys + sorted({k for t in self.rows.trials for k in t.params} - set(keys))

    @property
    def states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for trial in self.rows.trials:
            counts[trial.state] = counts.get(trial.state, 0) + 1
        return counts

    @property
    def total_device_hours(self) -> float:
        return sum(t.device_hours or 0.0 for t in self.rows.trials)

    def headers(self) -> list[str]:
        return ["trial", "state", *self.param_keys, f"{self.rows.metric} (objective)", "pruned at epoch/step",
                "wall time", "device-h"]

    def cells(self) -> list[list[str]]:
        lines = []
        for trial in self.ranked:
            if trial.objective is not None:
                objective = f"{trial.objective:.4f}"
            elif trial.state == "PRUNED" and trial.last_value is not None:
                objective = f"({trial.last_value:.4f} when pruned)"
            else:
                objective = DASH
            pruned = trial.pruned_at or {}
            where = (f"{int(pruned['epoch'])}/{int(pruned['step'])}" if "epoch" in pruned and "step" in pruned
                     else DASH)
            lines.append([str(trial.number), trial.state,
                          *(_cell(trial.params.get(k)) for k in self.param_keys), objective, where,
                          duration(trial.wall_time_s) if trial.wall_time_s is not None else DASH,
                          hours(trial.device_hours) if trial.device_hours is not None else DASH])
        return lines

    def headline(self) -> str:
        planned = self.rows.spec.get("trials")
        states = ", ".join(f"{n} {state}" for state, n in sorted(self.states.items())) or "none yet"
        of = f" of {planned} planned" if isinstance(planned, int) else ""
        return (f"{len(self.rows.trials)} trials{of} ({states}); {self.total_device_hours:.4f} device-hours in all; "
                f"objective: {self.rows.direction} {self.rows.metric} at the last validation")

    def best_text(self) -> str:
        if self.best is None:
            return "best trial: none yet (no trial has completed)"
        params = ", ".join(f"{k}={_value(self.best.params[k])}" for k in self.param_keys if k in self.best.params)
        return f"best trial: {self.best.number} — {self.rows.metric} {self.best.objective:.4f} with {params}"

    def reproduce_text(self) -> str | None:
        return None if self.best is None else reproduce_command(self.rows, self.best)

    def pruning_text(self) -> str:
        s = self.saving
        if not s.pruned:
            return "pruned trials: 0 (no device-hours saved by pruning)"
        text = (f"pruned trials: {s.pruned}; device-hours saved by pruning: {s.device_hours:.4f} "
                f"({s.epochs:g} epochs, about {s.steps:.0f} steps not run)")
        if s.unmeasured:
            text += f"; {s.unmeasured} pruned trial(s) lack max_epochs, device-hours or the pruning epoch, not counted"
        return text

    def protocol_lines(self) -> list[str]:
        spec = self.rows.spec
        lines = [f"objective: {self.rows.direction} {self.rows.metric} at the last validation of each trial; "
                 f"a pruned trial has no objective (its value when pruned is shown in brackets)"]
        for key in ("sampler", "seed", "pruner", "trials", "parallel"):
            if key in spec:
                lines.append(f"{key}: {_cell(spec[key])}")
        return [*lines, SAVED_FORMULA,
                "device-hours: wall time x allocated GPUs (CPUs without GPUs) on SLURM, wall time x trainer devices "
                "locally, summed over a trial's attempts"]


def _cell(value: object) -> str:
    if value is None:
        return DASH
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items())
    return str(value)


def build_search(sweep_dir: Path) -> SearchReport:
    rows = collect_search(sweep_dir)
    ranked = sorted(rows.trials, key=_rank_key(rows.direction))
    return SearchReport(rows=rows, ranked=ranked, saving=pruning_saving(rows.trials))
