"""One row per sweep member, from the manifest and the member's results file (never from memory or wandb)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launch import manifest
from orchestra.sweep.records import read_records

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
    """Every member of the sweep with its state and last-validation numbers; a results file that is unreadable or
    not of the shape a job writes (``read_checked_results``) keeps its member out of every number."""
    reading = read_records(sweep_dir)
    # An entry of the manifest that cannot be read has no row at all: nothing about it can be trusted.
    warnings: list[str] = [f"skipped a member: {problem}" for problem in reading.problems]
    rows = []
    keys = list(reading.sweep.swept_keys)
    for record in reading.records:
        if record.unreadable:
            warnings.append(f"skipped a member: {record.unreadable}")
            # Neither its numbers nor its own state can be trusted; it stays visible but out of every mean.
            rows.append(_row(record.member, "UNREADABLE", {}, record.job_dir))
            continue
        row = _row(record.member, record.state, record.results, record.job_dir)
        if not row.completed:  # numbers of an unfinished or failed run are not results; its curves stay plotted
            row.knn_top1 = row.probe_top1 = row.linear_top1 = None
        rows.append(row)
    for row in rows:
        row.params = {k: row.params.get(k, "") for k in keys}
    return SweepRows(sweep_dir=sweep_dir, swept_keys=keys, members=rows, warnings=warnings)
