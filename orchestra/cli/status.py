"""``orchestra status [SWEEP_DIR]``: one line per member from the scheduler and the members' results files."""

from __future__ import annotations

from orchestra.cli.args import split
from orchestra.errors import UserError

USAGE = """usage: orchestra status [SWEEP_DIR]

State of every member of a sweep (the latest under ./runs by default): queued, running, completed, failed,
diverged, interrupted..., from the scheduler's accounting and the members' results files, with the error (or log
tail) of failed and diverged members, and one warning line per entry or results file that cannot be read.
Imports neither torch nor Lightning.

options:
  -h, --help       this help
"""


def run(args: list[str]) -> int:
    flags, paths = split(args)
    if len(paths) > 1 or flags:
        raise UserError("usage: orchestra status [SWEEP_DIR]")
    from orchestra.sweep.control import status

    return status(paths[0] if paths else None)
