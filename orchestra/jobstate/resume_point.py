"""Which checkpoint a job starts from: ``last.ckpt``, else ``previous.ckpt``, else nothing (from scratch).

A checkpoint that cannot be read (cut short by a full disk or a copy, edited, zeroed) used to end every later
attempt in a torch zip traceback, with no way to resume the member. It is moved aside instead — kept, under a name
saying why — and the job goes on from the one before it, saying so in one line. Every rank reaches the same
choice from the same files; only rank zero moves anything.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from orchestra.jobstate.job_dir import JobDir, unreadable_aside


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a resume point, or None. Files are torch's zip format: every member's checksum is
    verified (a read of the file, no unpickling); a sharded checkpoint is a directory with files in it."""
    if path.is_dir():
        return None if any(path.iterdir()) else "an empty checkpoint directory"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            names = archive.namelist()
    except (zipfile.BadZipFile, EOFError) as err:
        return f"not a complete checkpoint: {err}"
    except OSError as err:
        return f"cannot be read: {err.strerror or err}"
    if bad is not None:
        return f"damaged entry {bad}"
    if not any(name.endswith("data.pkl") for name in names):
        return "no torch checkpoint inside"
    return None


def resume_point(job_dir: JobDir, rank_zero: bool) -> Path | None:
    """The readable checkpoint to resume from; unreadable ones on the way are moved aside (by rank zero)."""
    moved = []
    for candidate in (job_dir.last_checkpoint, job_dir.previous_checkpoint):
        if not candidate.exists():
            continue
        problem = checkpoint_problem(candidate)
        if problem is None:
            if moved:
                print(f"resuming from {candidate.name} instead", flush=True)
            return candidate
        moved.append(candidate)
        if rank_zero:
            aside = unreadable_aside(candidate)
            os.replace(candidate, aside)
            print(f"warning: {candidate} is unreadable ({problem}); moved it to {aside.name}", flush=True)
    if moved:
        print("warning: no readable checkpoint left; training starts from scratch (earlier results and metrics "
              "are kept)", flush=True)
    return None
