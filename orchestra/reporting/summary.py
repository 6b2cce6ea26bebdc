"""The report's content, computed once: table cells, verdict, floors and protocol shared by every output format.

Every renderer (terminal, markdown, HTML) prints these same strings, so the formats cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestra.jobstate.results import EVALUATION_PROTOCOL
from orchestra.reporting.aggregate import METRICS, ConfigRow, Verdict, config_rows, floors, verdict
from orchestra.reporting.collect import SEED_KEYS, MemberRow, SweepRows, collect

DASH = "—"
UNFINISHED = ("PENDING", "NOT_SUBMITTED", "RUNNING", "PREEMPTED", "INTERRUPTED")
# Members that ended with an error of their own: listed with it, never in a mean.
FAILED_STATES = ("FAILED", "DIVERGED")
SPREAD_NOTE = ("mean ± sample standard deviation (n - 1) over the COMPLETED members that differ only by seed; "
               "members that did not complete are listed with their state and kept out of every mean")


@dataclass
class Report:
    rows: SweepRows
    table: list[ConfigRow]
    verdict: Verdict | None
    floors: list[tuple[str, float]]
    protocol: dict[str, str]

    @property
    def sweep_dir(self) -> Path:
        return self.rows.sweep_dir

    @property
    def metrics(self) -> list[str]:
        """kNN and probe always; offline linear top-1 once any member has it."""
        return [m for m in METRICS if m != "linear_top1" or any(r.linear_top1 is not None for r in self.rows.members)]

    @property
    def config_keys(self) -> list[str]:
        return [k for k in self.rows.swept_keys if k not in SEED_KEYS]

    @property
    def has_seeds(self) -> bool:
        return any(k in SEED_KEYS for k in self.rows.swept_keys)

    @property
    def states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for member in self.rows.members:
            counts[member.state] = counts.get(member.state, 0) + 1
        return counts

    @property
    def total_device_hours(self) -> float:
        return sum(m.device_hours or 0.0 for m in self.rows.members)

    @property
    def unfinished(self) -> int:
        """Members that may still produce results: queued, waiting for a slot, running, preempted or interrupted."""
        return sum(m.state in UNFINISHED for m in self.rows.members)

    @property
    def without_results(self) -> int:
        """Members that ended without results: failed, diverged, cancelled, out of time, unreadable."""
        return sum(not m.completed and m.state not in UNFINISHED for m in self.rows.members)

    @property
    def failed(self) -> list[MemberRow]:
        return [m for m in self.rows.members if m.state in FAILED_STATES]

    def headers(self) -> list[str]:
        keys = [k.lstrip("+") for k in self.config_keys] or ["configuration"]
        return [*keys, *(["seed"] if self.has_seeds else []), "n", "state", *(METRICS[m] for m in self.metrics),
                "wall time", "device-h"]

    def cells(self) -> list[list[str]]:
        """One list of strings per table line: configurations, members that did not complete, then the floors."""
        lines = []
        for row in self.table:
            values = dict(row.config)
            keys = [values.get(k, "") for k in self.config_keys] or [row.label]
            done = row.state == "COMPLETED"
            metrics = [row.stats[m].text(n_of=row.n) if done and row.stats.get(m) else DASH for m in self.metrics]
            lines.append([*keys, *([row.seeds] if self.has_seeds else []), str(row.n) if done else DASH, row.state,
                          *metrics, duration(row.wall_time_s.mean) if row.wall_time_s else DASH,
                          hours(row.device_hours.mean) if row.device_hours else DASH])
        width = max(1, len(self.config_keys)) + (1 if self.has_seeds else 0)
        for label, value in self.floors:
            lines.append([label, *[""] * (width - 1), "", "floor", f"{value:.4f}",
                          *[DASH] * (len(self.metrics) - 1), DASH, DASH])
        return lines

    def headline(self) -> str:
        states = ", ".join(f"{n} {state}" for state, n in sorted(self.states.items()))
        missing = [*([f"{self.unfinished} member(s) not finished yet"] if self.unfinished else []),
                   *([f"{self.without_results} ended without results"] if self.without_results else [])]
        partial = f"; partial report: {', '.join(missing)}" if missing else ""
        return (f"{len(self.rows.members)} members ({states}); {self.total_device_hours:.4f} device-hours in "
                f"all{partial}")

    def verdict_text(self) -> str:
        if self.verdict is None:
            return "best configuration: none yet (no member has completed)"
        return self.verdict.sentence()

    def protocol_lines(self) -> list[str]:
        lines = [f"{name.replace('_', ' ')}: {text}" for name, text in self.protocol.items()]
        ranking = METRICS[self.verdict.metric] if self.verdict else "probe top-1"
        return [*lines, f"table: {SPREAD_NOTE}", f"best configuration: highest mean {ranking}",
                "device-hours: wall time x allocated GPUs (CPUs without GPUs) on SLURM, wall time x trainer devices "
                "locally, summed over a run's attempts (an attempt killed outright, e.g. by kill -9 or the OOM "
                "killer, is not counted); per run, mean over the configuration's members"]


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def hours(value: float) -> str:
    return f"{value:.4f}" if value < 10 else f"{value:.1f}"


def _protocol(rows: SweepRows) -> dict[str, str]:
    """What the members say they used (their results files), the current protocol when none has said yet."""
    said: dict[str, list[str]] = {}
    for member in sorted(rows.members, key=lambda m: not m.completed):
        for key, text in member.evaluation.items():
            if str(text) not in said.setdefault(key, []):
                said[key].append(str(text))
    # members may differ (a sweep over train_limit gives each its own kNN bank): every variant is stated
    protocol = {key: texts[0] if len(texts) == 1 else "differs between members: " + " | ".join(texts)
                for key, texts in said.items()}
    return protocol or dict(EVALUATION_PROTOCOL)


def build(sweep_dir: Path) -> Report:
    rows = collect(sweep_dir)
    table = config_rows(rows)
    return Report(rows=rows, table=table, verdict=verdict(table), floors=floors(rows), protocol=_protocol(rows))
