"""``orchestra resume [--diverged] [SWEEP_DIR]``: run again the members that did not complete, in their own job
dirs."""

from __future__ import annotations

from orchestra.cli.args import report_at_end, split
from orchestra.errors import UserError

USAGE = """usage: orchestra resume [--diverged] [SWEEP_DIR]

Run again, with the sweep's own launcher and settings, the members of a sweep (the latest under ./runs by default)
that did not complete and are neither queued nor running (failed, preempted, interrupted, cancelled, ...); each
continues from its checkpoints/last.ckpt. DIVERGED members (their loss became non-finite) are left alone: as they
are, they would diverge again.

options:
  --diverged       also run the DIVERGED members again
  -h, --help       this help
"""


def run(args: list[str]) -> int:
    flags, paths = split(args)
    if len(paths) > 1 or flags - {"--diverged"}:
        raise UserError("usage: orchestra resume [--diverged] [SWEEP_DIR]")
    from orchestra.sweep.control import resume

    return resume(paths[0] if paths else None, on_end=report_at_end, diverged="--diverged" in flags)
