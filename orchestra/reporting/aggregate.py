"""Members that differ only by ``seed`` become one configuration: mean ± std over its COMPLETED members.

A member that did not complete (failed, running, cancelled, unreadable) keeps a row of its own with its state and
no numbers, so it can never read as zero accuracy nor pull a mean down.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from orchestra.reporting.collect import MemberRow, SweepRows

METRICS = {"knn_top1": "kNN top-1", "probe_top1": "probe top-1", "linear_top1": "linear top-1"}


@dataclass
class Stat:
    mean: float
    std: float | None  # sample standard deviation (n - 1); None for a single value
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat | None:
        if not values:
            return None
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None, len(values))

    def text(self, digits: int = 4, n_of: int | None = None) -> str:
        body = f"{self.mean:.{digits}f}" + ("" if self.std is None else f" ± {self.std:.{digits}f}")
        return body if n_of is None or n_of == self.n else f"{body} (n={self.n})"


@dataclass
class ConfigRow:
    """One line of the table: a configuration's completed members, or one member that did not complete."""

    config: tuple[tuple[str, str], ...]
    members: list[MemberRow]
    state: str
    stats: dict[str, Stat | None] = field(default_factory=dict)
    wall_time_s: Stat | None = None
    device_hours: Stat | None = None

    @property
    def n(self) -> int:
        return len(self.members)

    @property
    def seeds(self) -> str:
        return ",".join(m.seed for m in self.members if m.seed is not None)

    @property
    def label(self) -> str:
        if self.config:
            return " ".join(f"{k.lstrip('+')}={v}" for k, v in self.config)
        methods = sorted({m.method for m in self.members if m.method})  # a sweep over seeds only
        return f"method={','.join(methods)}" if methods else "all members"


def _completed_row(config: tuple, members: list[MemberRow]) -> ConfigRow:
    def values(name: str) -> list[float]:
        return [getattr(m, name) for m in members if getattr(m, name) is not None]

    return ConfigRow(config=config, members=members, state="COMPLETED",
                     stats={name: Stat.of(values(name)) for name in METRICS},
                     wall_time_s=Stat.of(values("wall_time_s")), device_hours=Stat.of(values("device_hours")))


def _unfinished_row(member: MemberRow) -> ConfigRow:
    return ConfigRow(config=member.config, members=[member], state=member.state,
                     stats=dict.fromkeys(METRICS),
                     wall_time_s=Stat.of([member.wall_time_s] if member.wall_time_s is not None else []),
                     device_hours=Stat.of([member.device_hours] if member.device_hours is not None else []))


def config_rows(rows: SweepRows) -> list[ConfigRow]:
    """In manifest order of each configuration's first member: its completed row, then its other members."""
    by_config: dict[tuple, list[MemberRow]] = {}
    for member in rows.members:
        by_config.setdefault(member.config, []).append(member)
    table = []
    for config, members in by_config.items():
        done = [m for m in members if m.completed]
        if done:
            table.append(_completed_row(config, done))
        table.extend(_unfinished_row(m) for m in members if not m.completed)
    return table


@dataclass
class Verdict:
    metric: str
    best: ConfigRow
    runner_up: ConfigRow | None

    @property
    def lead(self) -> float | None:
        if self.runner_up is None:
            return None
        return self.best.stats[self.metric].mean - self.runner_up.stats[self.metric].mean

    def sentence(self) -> str:
        best = self.best.stats[self.metric]
        text = f"best configuration: {self.best.label} — {METRICS[self.metric]} {best.text()} (n={best.n})"
        if self.runner_up is None:
            return text + "; the only configuration with results"
        second = self.runner_up.stats[self.metric]
        if self.lead < 5e-5:  # equal at the 4 digits shown
            return text + f", tied with {self.runner_up.label} ({second.text()})"
        text += f", ahead of {self.runner_up.label} ({second.text()}) by {self.lead:.4f}"
        spread = max((s.std for s in (best, second) if s.std is not None), default=None)
        if spread is None:
            return text + "; no repeats, so no uncertainty estimate (sweep seed=0,1,2 for one)"
        if self.lead <= spread:
            return text + f"; within the seed spread (std up to {spread:.4f}), so not a clear win"
        return text


def ranking_metric(table: list[ConfigRow]) -> str | None:
    """Offline linear top-1 when every completed configuration has it, else the online probe, else kNN."""
    done = [row for row in table if row.state == "COMPLETED"]
    for metric in ("linear_top1", "probe_top1", "knn_top1"):
        if done and all(row.stats.get(metric) is not None for row in done):
            return metric
    return None


def verdict(table: list[ConfigRow]) -> Verdict | None:
    metric = ranking_metric(table)
    if metric is None:
        return None
    ranked = sorted((row for row in table if row.state == "COMPLETED"), key=lambda r: -r.stats[metric].mean)
    return Verdict(metric=metric, best=ranked[0], runner_up=ranked[1] if len(ranked) > 1 else None)


FLOORS = (("random-init backbone (no training)", "random_init/knn_top1"),
          ("raw pixels (no network)", "raw_pixels/knn_top1"))


def floors(rows: SweepRows) -> list[tuple[str, float]]:
    """kNN top-1 without training, averaged over the members that measured it (same split as the members)."""
    found = []
    for label, key in FLOORS:
        values = [m.floors[key] for m in rows.members if key in m.floors]
        if values:
            found.append((label, statistics.fmean(values)))
    return found
