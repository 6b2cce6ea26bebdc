"""A search sweep's report in every format: the terminal, report.md, report.html, results.csv and the PNGs, all
printing the strings ``search_summary`` computed once."""

from __future__ import annotations

import csv
import io
from html import escape
from pathlib import Path

from rich.console import Console
from rich.markup import escape as escape_markup
from rich.table import Table
from rich.text import Text

from launch.atomic import atomic_write, write_text
from orchestra.reporting.html_page import STYLE, figures_html, table_html
from orchestra.reporting.render_table import STATE_STYLES
from orchestra.reporting.search_plots import draw_search
from orchestra.reporting.search_summary import SearchReport, build_search
from orchestra.reporting.text_formats import markdown_table

STYLES = {**STATE_STYLES, "PRUNED": "magenta"}
CSV_FIELDS = ("trial", "state", "objective", "value_when_pruned", "pruned_at_epoch", "pruned_at_step", "max_epochs",
              "wall_time_s", "device_hours", "worker", "job_dir", "error")


def importance_lines(found: tuple[dict[str, float] | None, str]) -> list[str]:
    values, how = found
    if not values:
        return [how]
    return [f"{name}: {value:.3f}" for name, value in values.items()] + [f"computed with {how}"]


def terminal_table(report: SearchReport) -> Table:
    result = Table(title=Text(f"search {report.sweep_dir.name}: trials by {report.rows.metric} "
                              f"({report.rows.direction})"))
    headers = report.headers()
    for position, header in enumerate(headers):
        result.add_column(header, justify="left" if position < 2 + len(report.param_keys) else "right")
    for cells in report.cells():
        shown = [Text(cell) for cell in cells]
        shown[1] = Text(cells[1], style=STYLES.get(cells[1], ""))
        result.add_row(*shown)
    return result


def print_terminal(report: SearchReport, console: Console, found: tuple[dict[str, float] | None, str]) -> None:
    for warning in report.rows.warnings:
        console.print(f"[yellow]warning:[/] {escape_markup(warning)}", highlight=False, soft_wrap=True)
    console.print(terminal_table(report))
    for line in (report.headline(), report.best_text()):
        console.print(line, highlight=False, soft_wrap=True, markup=False)
    if report.reproduce_text():
        console.print(f"reproduce it: {report.reproduce_text()}", highlight=False, soft_wrap=True, markup=False)
    console.print(report.pruning_text(), highlight=False, soft_wrap=True, markup=False)
    lines = importance_lines(found)
    console.print(("parameter importance: " if found[0] else "") + "; ".join(lines), highlight=False,
                  soft_wrap=True, markup=False)
    console.print("[dim]protocol:[/]", highlight=False)
    for line in report.protocol_lines():
        console.print(f"[dim]  - {escape_markup(line)}[/]", highlight=False)


def markdown(report: SearchReport, figures: list[str], found: tuple[dict[str, float] | None, str]) -> str:
    parts = [f"# Search report: {report.sweep_dir.name}", "", f"Sweep directory: `{report.sweep_dir}`", "",
             report.headline(), "", f"**{report.best_text()}**", ""]
    if report.reproduce_text():
        parts += ["Reproduce the best trial:", "", "```", report.reproduce_text(), "```", ""]
    parts += [*(f"> warning: {w}" for w in report.rows.warnings), "",
              f"## Trials (sorted by {report.rows.metric}, {report.rows.direction})", "",
              markdown_table(report.headers(), report.cells()), "", "## Pruning", "", report.pruning_text(), "",
              "## Parameter importance", "", *(f"- {line}" for line in importance_lines(found)), "",
              "## Figures", "", *(f"![{name}]({name})" for name in figures), "",
              "## Protocol", "", *(f"- {line}" for line in report.protocol_lines()), ""]
    return "\n".join(parts)


def html(report: SearchReport, figures: dict[str, bytes], found: tuple[dict[str, float] | None, str]) -> str:
    headers = report.headers()
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>Search report: {escape(report.sweep_dir.name)}</title><style>{STYLE}</style></head><body>",
             f"<h1>Search report: {escape(report.sweep_dir.name)}</h1>",
             f"<p>Sweep directory: <code>{escape(str(report.sweep_dir))}</code><br>{escape(report.headline())}</p>",
             f'<p class="verdict">{escape(report.best_text())}</p>']
    if report.reproduce_text():
        parts.append(f"<p>Reproduce the best trial:</p><pre>{escape(report.reproduce_text())}</pre>")
    parts += [*(f'<p class="warning">warning: {escape(w)}</p>' for w in report.rows.warnings),
              f"<h2>Trials (sorted by {escape(report.rows.metric)}, {escape(report.rows.direction)})</h2>",
              table_html(headers, report.cells(), 2 + len(report.param_keys), 1),
              f"<h2>Pruning</h2><p>{escape(report.pruning_text())}</p>", "<h2>Parameter importance</h2><ul>",
              *(f"<li>{escape(line)}</li>" for line in importance_lines(found)), "</ul><h2>Figures</h2>"]
    parts += figures_html(figures)
    parts += ["<h2>Protocol</h2><ul>", *(f"<li>{escape(line)}</li>" for line in report.protocol_lines()),
              "</ul></body></html>"]
    return "\n".join(parts)


def results_csv(report: SearchReport) -> str:
    """One line per trial in rank order: its parameters, state and numbers (empty where it has none)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*report.param_keys, *CSV_FIELDS])
    for t in report.ranked:
        pruned = t.pruned_at or {}
        values = (t.number, t.state, t.objective, t.last_value if t.state == "PRUNED" else None,
                  pruned.get("epoch"), pruned.get("step"), t.max_epochs, t.wall_time_s, t.device_hours, t.worker,
                  t.job_dir, t.error)
        writer.writerow([*(t.params.get(k, "") for k in report.param_keys), *("" if v is None else v for v in values)])
    return buffer.getvalue()


def write_search_report(report: SearchReport, found: tuple[dict[str, float] | None, str] | None = None
                        ) -> list[Path]:
    figures, found = draw_search(report, found)
    written = []
    for name, png in figures.items():
        atomic_write(report.sweep_dir / name, lambda handle, png=png: handle.write(png))
        written.append(report.sweep_dir / name)
    for name, text in (("report.md", markdown(report, list(figures), found)), ("results.csv", results_csv(report)),
                       ("report.html", html(report, figures, found))):
        write_text(report.sweep_dir / name, text)
        written.append(report.sweep_dir / name)
    return written


def print_search_report(sweep_dir: Path, console: Console | None = None, write: bool = True) -> SearchReport:
    """The trials in the terminal and, unless ``write`` is false, the report files in the sweep directory."""
    from orchestra.reporting.search_plots import importances

    console = console or Console()
    report = build_search(Path(sweep_dir))
    found = importances(report)
    print_terminal(report, console, found)
    if write:
        written = write_search_report(report, found)
        console.print(f"report: {report.sweep_dir / 'report.html'} (also " +
                      ", ".join(p.name for p in written if p.name != "report.html") + ")", highlight=False,
                      soft_wrap=True, markup=False)
    return report
