"""The report in the terminal: a rich table, the verdict, warnings and the protocol."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from orchestra.reporting.summary import FAILED_STATES, Report

STATE_STYLES = {"COMPLETED": "green", "FAILED": "red", "DIVERGED": "red", "UNREADABLE": "red", "CANCELLED": "yellow",
                "TIMEOUT": "yellow", "PREEMPTED": "yellow", "INTERRUPTED": "yellow", "RUNNING": "cyan",
                "PENDING": "cyan", "floor": "dim"}


def table(report: Report) -> Table:
    title = f"sweep {report.sweep_dir.name}: top-1 on the validation split at the last validation"
    result = Table(title=Text(title))
    headers = report.headers()
    first_number = headers.index("n")
    for position, header in enumerate(headers):
        result.add_column(header, justify="right" if position >= first_number else "left")
    state_column = headers.index("state")
    for cells in report.cells():
        state = cells[state_column]
        # Text, not str: a cell is never read as rich markup (an override value or error may hold "[/]").
        shown = [Text(cell) for cell in cells]
        shown[state_column] = Text(state, style=STATE_STYLES.get(state, ""))
        result.add_row(*shown, style="dim" if state == "floor" else None)
    return result


def print_terminal(report: Report, console: Console) -> None:
    for warning in report.rows.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)  # one line each
    console.print(table(report))
    console.print(report.headline(), highlight=False, soft_wrap=True, markup=False)
    console.print(report.verdict_text(), highlight=False, soft_wrap=True, markup=False)
    for row in report.table:
        for member in row.members:
            if member.state in FAILED_STATES:
                reason = member.error or "no error recorded; see log.txt in its job directory"
                console.print(f"[red]{member.state.lower()}:[/] member {member.index} ({escape(member.label)}): "
                              f"{escape(reason)}", highlight=False, soft_wrap=True)
    console.print("[dim]evaluation protocol:[/]", highlight=False)
    for line in report.protocol_lines():
        console.print(f"[dim]  - {escape(line)}[/]", highlight=False)
