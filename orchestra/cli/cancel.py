"""``orchestra cancel [SWEEP_DIR]``: stop the members still queued or running."""

from __future__ import annotations

from orchestra.cli.args import split
from orchestra.errors import UserError

USAGE = """usage: orchestra cancel [SWEEP_DIR]

Cancel the members of a sweep (the latest under ./runs by default) that are still queued or running; they show
CANCELLED, and orchestra resume runs them again later. Imports neither torch nor Lightning.

options:
  -h, --help       this help
"""


def run(args: list[str]) -> int:
    flags, paths = split(args)
    if len(paths) > 1 or flags:
        raise UserError("usage: orchestra cancel [SWEEP_DIR]")
    from orchestra.sweep.control import cancel

    return cancel(paths[0] if paths else None)
