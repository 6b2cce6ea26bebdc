"""``orchestra report [SWEEP_DIR] [--wandb]``: check the directory, write the local report, then publish it."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from orchestra.cli.args import split
from orchestra.errors import UserError

USAGE = """usage: orchestra report [SWEEP_DIR] [--wandb]

Comparison table of a sweep's members (the latest under ./runs by default): online linear-probe and kNN accuracy,
mean ± std over seeds, next to the no-training floors. Writes report.md, report.html, results.csv and plots into
the sweep directory. Imports neither torch nor Lightning.

options:
  --wandb          also publish the report as a wandb Report (needs a wandb server and login)
  -h, --help       this help
"""


def run(args: list[str]) -> int:
    flags, paths = split(args)
    if len(paths) > 1 or flags - {"--wandb"}:
        raise UserError("usage: orchestra report [SWEEP_DIR] [--wandb]")
    return report_command(paths[0] if paths else None, wandb="--wandb" in flags)


def sweep_dir_from(path: str | None) -> Path:
    """The sweep to report on (the latest under ./runs by default), or one line saying what is wrong."""
    from launch import manifest
    from orchestra.sweep.control import latest_sweep

    if path is None:
        return latest_sweep().resolve()
    sweep_dir = Path(path)
    if not sweep_dir.exists():
        raise UserError(f"{sweep_dir} does not exist; pass a sweep directory (runs/sweeps/<time>) or none for the "
                        f"latest sweep")
    if not sweep_dir.is_dir():
        raise UserError(f"{sweep_dir} is a file; pass the sweep directory that holds sweep.json")
    if not manifest.is_sweep(sweep_dir):
        what = "is empty" if not any(sweep_dir.iterdir()) else "has no sweep.json"
        raise UserError(f"{sweep_dir} {what}, so it is not a sweep directory; pass one made by orchestra sweep "
                        f"(runs/sweeps/<time>)")
    return sweep_dir.resolve()


def report_command(path: str | None, wandb: bool = False, console: Console | None = None) -> int:
    from orchestra.reporting import print_report

    console = console or Console()
    sweep_dir = sweep_dir_from(path)
    print_report(sweep_dir, console)
    if wandb:
        from orchestra.reporting.search_collect import search_spec

        if search_spec(sweep_dir) is not None:
            console.print(f"wandb report: not made for a search sweep; its trials' runs are in wandb group "
                          f"'{sweep_dir.name}' (params under search/, state in the summary; orchestra sync "
                          f"{sweep_dir} uploads offline ones), and the local report above is complete",
                          highlight=False, soft_wrap=True, markup=False)
            return 0
        try:
            from orchestra.tracking.wandb_report import publish_report
        except ImportError as err:
            console.print(f"wandb report: not available in this installation ({err}); the local report above is "
                          f"complete", highlight=False, soft_wrap=True)
            return 0
        publish_report(sweep_dir, console)
    return 0
