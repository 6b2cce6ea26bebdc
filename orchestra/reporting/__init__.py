"""``orchestra report``: the comparison of a sweep's members, from the manifest and their results files.

collect (rows) -> aggregate (configurations, mean ± std over seeds) -> summary (cells shared by every format) ->
render_table (terminal), text_formats (report.md, results.csv), plots (PNGs), html_page (report.html).
Never imports torch: a report of a running sweep on a login node must be quick.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from launch.atomic import atomic_write, write_text
from orchestra.reporting.search_summary import SearchReport
from orchestra.reporting.summary import Report, build

__all__ = ["Report", "build", "print_report", "write_report"]


def write_report(report: Report) -> list[Path]:
    """report.md, results.csv, report.html and the PNGs, each written atomically into the sweep directory."""
    from orchestra.reporting import html_page, plots, text_formats

    figures = plots.draw_all(report)
    written = []
    for name, png in figures.items():
        atomic_write(report.sweep_dir / name, lambda handle, png=png: handle.write(png))
        written.append(report.sweep_dir / name)
    for name, text in (("report.md", text_formats.markdown(report, list(figures))),
                       ("results.csv", text_formats.results_csv(report)),
                       ("report.html", html_page.render(report, figures))):
        write_text(report.sweep_dir / name, text)
        written.append(report.sweep_dir / name)
    return written


def print_report(sweep_dir: Path, console: Console | None = None, write: bool = True) -> Report | SearchReport:
    """The table in the terminal and, unless ``write`` is false, the report files in the sweep directory."""
    from orchestra.reporting.render_table import print_terminal
    from orchestra.reporting.search_collect import search_spec

    if search_spec(Path(sweep_dir)) is not None:  # a search sweep: trials ranked by the objective, not a grid table
        from orchestra.reporting.search_render import print_search_report

        return print_search_report(Path(sweep_dir), console, write)
    console = console or Console()
    report = build(Path(sweep_dir))
    print_terminal(report, console)
    if write:
        written = write_report(report)
        console.print(f"report: {report.sweep_dir / 'report.html'} (also " +
                      ", ".join(p.name for p in written if p.name != "report.html") + ")", highlight=False,
                      soft_wrap=True, markup=False)
    return report
