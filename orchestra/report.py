"""The comparison table at the end of a sweep, read from the members' results files."""

from __future__ import annotations

import statistics
from pathlib import Path

from rich.console import Console
from rich.table import Table

from launch import manifest
from orchestra.results import read_results


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _floor(rows: list[dict], key: str) -> float | None:
    values = [r["floors"][key] for r in rows if key in r.get("floors", {})]
    return statistics.mean(values) if values else None


def comparison_table(sweep_dir: Path) -> Table:
    sweep = manifest.load(sweep_dir)
    swept = sweep.swept_keys
    table = Table(title=f"sweep {Path(sweep_dir).name}: kNN and linear-probe top-1 on the held-out split (last epoch)")
    for key in swept or ["member"]:
        table.add_column(key)
    for name in ("state", "kNN top-1", "probe top-1", "wall time"):
        table.add_column(name, justify="right")
    rows = []
    for member in sweep.members:
        results = read_results(Path(member.job_dir) / "results.json")
        rows.append(results)
        values = dict(o.split("=", 1) for o in member.overrides if "=" in o)
        labels = [values.get(k, "") for k in swept] or [str(member.index)]
        metrics = results.get("metrics", {})
        state = results.get("state", member.state)
        done = state == "COMPLETED"
        wall = f"{results['wall_time_s']:.0f} s" if "wall_time_s" in results else "—"
        table.add_row(*labels, state, _fmt(metrics.get("knn/top1") if done else None),
                      _fmt(metrics.get("probe/top1") if done else None), wall)
    pad = [""] * (max(1, len(swept)) - 1)
    for label, key in (("random-init backbone (no training)", "random_init/knn_top1"),
                       ("raw pixels (no network)", "raw_pixels/knn_top1")):
        floor = _floor(rows, key)
        if floor is not None:
            table.add_row(label, *pad, "floor", _fmt(floor), "—", "—", style="dim")
    return table


def print_report(sweep_dir: Path, console: Console | None = None) -> None:
    (console or Console()).print(comparison_table(sweep_dir))
