"""``orchestra sync SWEEP_DIR [--dry-run]``: upload the members' offline wandb runs."""

from __future__ import annotations

from orchestra.cli.args import split
from orchestra.errors import UserError

USAGE = """usage: orchestra sync SWEEP_DIR [--dry-run]

Upload the offline wandb runs of a sweep's members (trained with logger=wandb and no network) that are not synced
yet; needs `wandb login` (or WANDB_API_KEY) and a reachable server.

options:
  --dry-run        list the runs that would be uploaded; upload nothing
  -h, --help       this help
"""


def run(args: list[str]) -> int:
    flags, paths = split(args)
    if len(paths) != 1 or flags - {"--dry-run"}:
        raise UserError("usage: orchestra sync SWEEP_DIR [--dry-run]")
    from orchestra.tracking.wandb_sync import sync

    return sync(paths[0], dry_run="--dry-run" in flags)
