"""report.html: one self-contained file (inline CSS, PNGs embedded as base64) that opens anywhere, offline."""

from __future__ import annotations

import base64
from html import escape

from orchestra.reporting.summary import Report
from orchestra.reporting.text_formats import member_lines

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 75em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f3f3f3; }
td.text { text-align: left; }
tr.floor td { color: #777; font-style: italic; }
tr.FAILED td, tr.DIVERGED td, tr.UNREADABLE td { background: #fde8e8; }
tr.RUNNING td, tr.PENDING td, tr.PREEMPTED td, tr.INTERRUPTED td { background: #eef5fd; }
.verdict { font-weight: bold; font-size: 1.1em; }
.warning { color: #8a5a00; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
"""


def table_html(headers: list[str], lines: list[list[str]], text_columns: int, state_column: int | None) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for line in lines:
        state = line[state_column] if state_column is not None else ""
        cells = "".join(f'<td class="text">{escape(c)}</td>' if i < text_columns else f"<td>{escape(c)}</td>"
                        for i, c in enumerate(line))
        body.append(f'<tr class="{escape(state)}">{cells}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def figures_html(figures: dict[str, bytes]) -> list[str]:
    """Each PNG embedded as base64 with its name as the caption, so the page needs no other file."""
    parts = []
    for name, png in figures.items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<figure><img alt="{escape(name)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{escape(name)}</figcaption></figure>")
    return parts


def render(report: Report, figures: dict[str, bytes]) -> str:
    headers = report.headers()
    state_column = headers.index("state")
    member_headers, members = member_lines(report)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Sweep report: {escape(report.sweep_dir.name)}</title><style>{STYLE}</style></head><body>",
        f"<h1>Sweep report: {escape(report.sweep_dir.name)}</h1>",
        f"<p>Sweep directory: <code>{escape(str(report.sweep_dir))}</code><br>{escape(report.headline())}</p>",
        f'<p class="verdict">{escape(report.verdict_text())}</p>',
        *(f'<p class="warning">warning: {escape(w)}</p>' for w in report.rows.warnings),
        "<h2>Configurations (top-1 on the validation split, last validation)</h2>",
        table_html(headers, report.cells(), headers.index("n"), state_column),
    ]
    if report.failed:
        parts.append("<h2>Failed and diverged members</h2><ul>")
        parts += [f"<li>member {m.index} ({escape(m.label)}) {m.state}: {escape(m.error or 'no error recorded')}</li>"
                  for m in report.failed]
        parts.append("</ul>")
    parts += ["<h2>Members</h2>", table_html(member_headers, members, 2, member_headers.index("state")),
              "<h2>Figures</h2>"]
    parts += figures_html(figures)
    parts += ["<h2>Evaluation protocol</h2><ul>", *(f"<li>{escape(line)}</li>" for line in report.protocol_lines()),
              "</ul></body></html>"]
    return "\n".join(parts)
