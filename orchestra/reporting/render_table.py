"""The report in the terminal: a rich table, the verdict, warnings and the protocol."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from orchestra.reporting.summary import Report

STATE_STYLES = {"COMPLETED": "green", "FAILED": "red", "UNREADABLE": "red", "CANCELLED": "yellow",
                "TIMEOUT": "yellow", "PREEMPTED": "yellow", "RUNNING": "cyan", "PENDING": "cyan", "floor": "dim"}


def table(report: Report) -> Table:
    title = f"sweep {report.sweep_dir.name}: top-1 on the validation split at the last validation"
    result = Table(title=title)
    headers = report.headers()
    first_number = headers.index("n")
    for position, header in enumerate(headers):
        result.add_column(header, justify="right" if position >= first_number else "left")
    state_column = headers.index("state")
    for cells in report.cells():
        state = cells[state_column]
        shown: list[str | Text] = list(cells)
        shown[state_column] = Text(state, style=STATE_STYLES.get(state, ""))
        result.add_row(*shown, style="dim" if state == "floor" else None)
    return result


def print_terminal(report: Report, console: Console) -> None:
    for warning in report.rows.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    console.print(table(report))
    console.print(report.headline(), highlight=False, soft_wrap=True)
    console.print(report.verdict_text(), highlight=False, soft_wrap=True)
    for row in report.table:
        for member in row.members:
            if member.state == "FAILED":
                reason = member.error or "no error recorded; see log.txt in its job directory"
                console.print(f"[red]failed:[/] member {member.index} ({member.label}): {reason}", highlight=False,
                              soft_wrap=True)
    console.print("[dim]evaluation protocol:[/]", highlight=False)
    for line in report.protocol_lines():
        console.print(f"[dim]  - {line}[/]", highlight=False)
