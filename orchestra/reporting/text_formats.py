"""report.md (for people and pull requests) and results.csv (one line per member, for notebooks)."""

from __future__ import annotations

import csv
import io

from orchestra.reporting.collect import MemberRow
from orchestra.reporting.summary import DASH, Report

CSV_FIELDS = ("member", "job_dir", "state", "attempts", "knn_top1", "probe_top1", "linear_top1", "wall_time_s",
              "device_hours", "peak_memory_mb", "error")


def markdown_table(headers: list[str], lines: list[list[str]]) -> str:
    def escape(cell: str) -> str:
        return cell.replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(escape(c) for c in line) + " |" for line in lines]
    return "\n".join(out)


def _number(value: float | None, digits: int = 4) -> str:
    return DASH if value is None else f"{value:.{digits}f}"


def member_lines(report: Report) -> tuple[list[str], list[list[str]]]:
    headers = ["#", "member", "state", "attempts", *("kNN top-1", "probe top-1", "linear top-1"),
               "wall time (s)", "device-h", "peak memory (MiB)"]

    def line(m: MemberRow) -> list[str]:
        return [str(m.index), m.label, m.state, str(m.attempts), _number(m.knn_top1), _number(m.probe_top1),
                _number(m.linear_top1), _number(m.wall_time_s, 1), _number(m.device_hours),
                _number(m.peak_memory_mb, 0)]

    return headers, [line(m) for m in report.rows.members]


def markdown(report: Report, figures: list[str]) -> str:
    parts = [f"# Sweep report: {report.sweep_dir.name}", "", f"Sweep directory: `{report.sweep_dir}`", "",
             report.headline(), "", f"**{report.verdict_text()}**", ""]
    for warning in report.rows.warnings:
        parts += [f"> warning: {warning}", ""]
    parts += ["## Configurations (top-1 on the validation split, last validation)", "",
              markdown_table(report.headers(), report.cells()), ""]
    if report.failed:
        parts += ["## Failed and diverged members", ""]
        parts += [f"- member {m.index} ({m.label}) {m.state}: {m.error or 'no error recorded; see its log.txt'}"
                  for m in report.failed]
        parts.append("")
    headers, lines = member_lines(report)
    parts += ["## Members", "", markdown_table(headers, lines), ""]
    parts += ["## Figures", ""] + [f"![{name}]({name})" for name in figures] + [""]
    parts += ["## Evaluation protocol", ""] + [f"- {line}" for line in report.protocol_lines()] + [""]
    return "\n".join(parts)


def results_csv(report: Report) -> str:
    """One row per member: its swept values, state and numbers (empty where it has none)."""
    keys = [k.lstrip("+") for k in report.rows.swept_keys]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*keys, *CSV_FIELDS])
    for m in report.rows.members:
        values = {"member": m.index, "job_dir": m.job_dir, "state": m.state, "attempts": m.attempts,
                  "knn_top1": m.knn_top1, "probe_top1": m.probe_top1, "linear_top1": m.linear_top1,
                  "wall_time_s": m.wall_time_s, "device_hours": m.device_hours, "peak_memory_mb": m.peak_memory_mb,
                  "error": m.error}
        writer.writerow([*(m.params.get(k, "") for k in report.rows.swept_keys),
                         *("" if values[f] is None else values[f] for f in CSV_FIELDS)])
    return buffer.getvalue()
