"""One row per trial of a search sweep: the study's journal (which trials exist, their params) joined with each
trial's own job directory (results.json and config.yaml: state, objective, costs, where it was pruned).

The results files are the source of truth for numbers, as in a grid report; the journal adds the trials that have
no results file yet (asked for, not started). Imports optuna (which does not import torch), never torch.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from launch import manifest
from orchestra.errors import UserError
from orchestra.jobstate.results import read_checked_results

JOURNAL = "study.journal"
STUDY_NAME = "search"
TRIALS_DIR = "trials"
# What the job body saw itself: it wins over the journal, which a killed worker leaves at RUNNING.
ENDS_OWN = ("COMPLETED", "PRUNED", "FAILED", "DIVERGED", "PREEMPTED", "INTERRUPTED")
OPTUNA_STATES = {"COMPLETE": "COMPLETED", "PRUNED": "PRUNED", "FAIL": "FAILED", "RUNNING": "RUNNING",
                 "WAITING": "PENDING"}


@dataclass
class TrialRow:
    number: int
    state: str
    params: dict[str, Any]
    job_dir: Path
    objective: float | None = None  # COMPLETED trials only: the metric at the last validation
    last_value: float | None = None  # the objective metric at the latest validation (where a pruned trial stopped)
    pruned_at: dict[str, float] | None = None  # {step, epoch} of the validation that pruned it
    max_epochs: int | None = None
    device_hours: float | None = None
    wall_time_s: float | None = None
    worker: str | None = None
    error: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    distributions: dict[str, Any] = field(default_factory=dict)  # optuna's, from the journal (for importances)

    @property
    def epochs_run(self) -> float | None:
        """Epochs trained before the pruning validation: its epoch index is 0-based, the validation closes it."""
        if self.pruned_at is None or not isinstance(self.pruned_at.get("epoch"), int | float):
            return None
        return float(self.pruned_at["epoch"]) + 1


@dataclass
class SearchRows:
    sweep_dir: Path
    spec: dict[str, Any]  # the manifest's "search" section
    command: list[str]  # the sweep's command line, as the manifest recorded it
    trials: list[TrialRow]
    warnings: list[str]

    @property
    def metric(self) -> str:
        return str((self.spec.get("objective") or {}).get("metric") or "probe/top1")

    @property
    def direction(self) -> str:
        return str((self.spec.get("objective") or {}).get("direction") or "maximize")


def search_spec(sweep_dir: Path) -> dict[str, Any] | None:
    """The manifest's search section when the sweep is a search sweep, else None (a grid sweep)."""
    try:
        data = json.loads((Path(sweep_dir) / manifest.MANIFEST).read_bytes())
    except (OSError, ValueError, RecursionError):  # RecursionError: nested beyond the parser
        return None  # the grid reader names what is wrong with the file
    if not isinstance(data, dict) or data.get("kind") != "search":
        return None
    spec = data.get("search")
    return spec if isinstance(spec, dict) else {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def journal_trials(sweep_dir: Path) -> list[Any]:
    """The study's frozen trials from its journal file; [] when there is none yet. Never creates or writes it."""
    path = Path(sweep_dir) / JOURNAL
    if not path.is_file():
        return []
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the journal classes are marked experimental in some optuna versions
        storage = JournalStorage(JournalFileBackend(str(path)))
        try:
            study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
        except KeyError:  # journal written, study not created yet
            return []
    return list(study.get_trials(deepcopy=False))


def _max_epochs(job_dir: Path) -> int | None:
    try:
        config = yaml.safe_load((job_dir / "config.yaml").read_text()) or {}
        value = (config.get("trainer") or {}).get("max_epochs")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return int(value) if isinstance(value, int) and value > 0 else None


def _last_metric(history: list[dict[str, Any]], metric: str) -> float | None:
    values = [_number((h.get("metrics") or {}).get(metric)) for h in history]
    values = [v for v in values if v is not None]
    return values[-1] if values else None


def _trial_row(number: int, journal_state: str, params: dict[str, Any], job_dir: Path, results: dict[str, Any],
               metric: str, worker: str | None) -> TrialRow:
    own = results.get("search") if isinstance(results.get("search"), dict) else {}
    state = results.get("state") if results.get("state") in ENDS_OWN else journal_state
    history = [h for h in results.get("history") or [] if isinstance(h, dict)]
    row = TrialRow(number=number, state=str(state), params=dict(own.get("params") or params), job_dir=job_dir,
                   last_value=_last_metric(history, metric), max_epochs=_max_epochs(job_dir),
                   device_hours=_number(results.get("device_hours")), wall_time_s=_number(results.get("wall_time_s")),
                   worker=worker, error=results.get("error"), history=history)
    if state == "COMPLETED":
        objective = (own.get("objective") or {}).get("value")
        row.objective = _number(objective) if objective is not None else _number((results.get("metrics") or {})
                                                                                 .get(metric))
    pruned = results.get("pruned_at")
    if state == "PRUNED" and isinstance(pruned, dict):
        row.pruned_at = {k: v for k, v in pruned.items() if _number(v) is not None}
    return row


def collect_search(sweep_dir: Path) -> SearchRows:
    """Every trial the journal or the trials folder knows, with its state and numbers."""
    sweep_dir = Path(sweep_dir)
    spec = search_spec(sweep_dir) or {}
    try:
        sweep, problems = manifest.read(sweep_dir)
    except manifest.ManifestError as err:
        raise UserError(str(err)) from None
    rows = SearchRows(sweep_dir=sweep_dir, spec=spec, command=list(sweep.command), trials=[],
                      warnings=[f"skipped a worker: {p}" for p in problems])
    try:
        frozen = journal_trials(sweep_dir)
    except Exception as err:  # a damaged journal must not hide the trials that have results files
        frozen = []
        rows.warnings.append(f"{sweep_dir / JOURNAL} could not be read ({type(err).__name__}: {err}); trials are "
                             f"listed from their job directories only")
    known: dict[int, tuple[str, dict[str, Any], Path, str | None]] = {}
    distributions = {trial.number: dict(trial.distributions) for trial in frozen}
    for trial in frozen:
        job_dir = Path(str(trial.user_attrs.get("job_dir") or sweep_dir / TRIALS_DIR / f"{trial.number:04d}"))
        inside = sweep_dir / TRIALS_DIR / job_dir.name  # a copied or moved sweep stays readable
        known[trial.number] = (OPTUNA_STATES.get(trial.state.name, trial.state.name), dict(trial.params),
                               inside if inside.is_dir() else job_dir, trial.user_attrs.get("worker"))
    trials_dir = sweep_dir / TRIALS_DIR
    for job_dir in sorted(trials_dir.iterdir()) if trials_dir.is_dir() else []:
        if job_dir.is_dir() and job_dir.name.isdigit() and int(job_dir.name) not in known:
            known[int(job_dir.name)] = ("RUNNING", {}, job_dir, None)
    for number in sorted(known):
        state, params, job_dir, worker = known[number]
        try:
            results = read_checked_results(job_dir / "results.json")
        except UserError as err:
            rows.warnings.append(f"trial {number}: {err}")
            rows.trials.append(TrialRow(number=number, state="UNREADABLE", params=params, job_dir=job_dir))
            continue
        row = _trial_row(number, state, params, job_dir, results, rows.metric,
                         str(worker) if worker is not None else None)
        row.distributions = distributions.get(number, {})
        rows.trials.append(row)
    return rows
