"""One row per sweep member, from the manifest and the member's results file (never from memory or wandb)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launch import manifest
from orchestra.errors import UserError
from orchestra.results import read_results

SEED_KEYS = ("seed", "+seed", "++seed")


@dataclass
class MemberRow:
    index: int
    params: dict[str, str]  # swept key -> this member's value
    state: str
    job_dir: Path
    knn_top1: float | None = None
    probe_top1: float | None = None
    linear_top1: float | None = None
    wall_time_s: float | None = None
    device_hours: float | None = None
    peak_memory_mb: float | None = None
    attempts: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    floors: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    method: str | None = None

    @property
    def completed(self) -> bool:
        return self.state == "COMPLETED"

    @property
    def seed(self) -> str | None:
        return next((self.params[k] for k in SEED_KEYS if k in self.params), None)

    @property
    def config(self) -> tuple[tuple[str, str], ...]:
        """What the member was run with, apart from its seed: members sharing it are repeats of one configuration."""
        return tuple((k, v) for k, v in self.params.items() if k not in SEED_KEYS)

    @property
    def label(self) -> str:
        return " ".join(f"{k.lstrip('+')}={v}" for k, v in self.params.items()) or f"member {self.index}"


@dataclass
class SweepRows:
    sweep_dir: Path
    swept_keys: list[str]
    members: list[MemberRow]
    warnings: list[str]


def _read_results(path: Path, warnings: list[str]) -> dict[str, Any] | None:
    """The results so far ({} before the job started), or None when the file is unreadable (with a warning)."""
    try:
        return read_results(path)
    except UserError as err:  # unreadable as JSON, or not readable at all
        warnings.append(f"skipped a member: {err}")
        return None


def _scheduler_states(members: list[manifest.Member]) -> dict[str, dict[str, str]]:
    job_ids = [m.job_ids[-1] for m in members if m.job_ids and not m.job_ids[-1].startswith("local:")]
    if not job_ids:
        return {}
    from launch import slurm

    return slurm.scheduler_states(job_ids)  # one sacct call; an unreachable scheduler answers {}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _row(member: manifest.Member, state: str, results: dict[str, Any], job_dir: Path) -> MemberRow:
    values = dict(o.split("=", 1) for o in member.overrides if "=" in o)
    metrics = results.get("metrics") or {}
    return MemberRow(
        index=member.index, params=values, state=state, job_dir=job_dir,
        knn_top1=_number(metrics.get("knn/top1")), probe_top1=_number(metrics.get("probe/top1")),
        linear_top1=_number(results.get("linear_top1")), wall_time_s=_number(results.get("wall_time_s")),
        device_hours=_number(results.get("device_hours")), peak_memory_mb=_number(results.get("peak_memory_mb")),
        attempts=max(member.attempts, int(results.get("attempts") or 0)),
        history=[h for h in results.get("history") or [] if isinstance(h, dict)],
        floors={k: v for k, v in (results.get("floors") or {}).items() if _number(v) is not None},
        evaluation=dict(results.get("evaluation") or {}), error=results.get("error"), method=results.get("method"),
    )


def collect(sweep_dir: Path) -> SweepRows:
    """Every member of the sweep with its state and last-validation numbers; unreadable results are skipped."""
    from orchestra.sweep_status import member_state

    try:
        sweep = manifest.load(sweep_dir)
    except (json.JSONDecodeError, TypeError, KeyError) as err:
        raise UserError(f"{sweep_dir / manifest.MANIFEST} is not a readable sweep manifest ({err}); "
                        f"restore it from the sweep's creation or start a new sweep") from None
    scheduler = _scheduler_states(sweep.members)
    warnings: list[str] = []
    rows = []
    keys = list(sweep.swept_keys)
    for member in sweep.members:
        job_dir = manifest.member_dir(sweep_dir, member)
        results = _read_results(job_dir / "results.json", warnings)
        if results is None:
            # Neither its numbers nor its own state can be trusted; it stays visible but out of every mean.
            rows.append(_row(member, "UNREADABLE", {}, job_dir))
            continue
        row = _row(member, member_state(member, scheduler, results), results, job_dir)
        if not row.completed:  # numbers of an unfinished or failed run are not results; its curves stay plotted
            row.knn_top1 = row.probe_top1 = row.linear_top1 = None
        rows.append(row)
    for row in rows:
        row.params = {k: row.params.get(k, "") for k in keys}
    return SweepRows(sweep_dir=sweep_dir, swept_keys=keys, members=rows, warnings=warnings)
