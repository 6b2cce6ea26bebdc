"""The sweep manifest: one JSON file listing every member, the only record status/resume/report read.

Updates take an exclusive lock on a sibling lock file and replace the JSON atomically, so two commands touching
one sweep never interleave half-written state.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from launch.atomic import write_text

MANIFEST = "sweep.json"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Member:
    index: int
    overrides: list[str]
    job_dir: str
    state: str = "PENDING"
    attempts: int = 0
    retries: int = 0  # automatic re-runs after an infrastructure failure (launcher.max_failures), within attempts
    job_ids: list[str] = field(default_factory=list)
    submitted_at: str | None = None
    finished_at: str | None = None


@dataclass
class Sweep:
    sweep_dir: str
    command: list[str]
    launcher: str
    created_at: str
    members: list[Member]
    swept_keys: list[str] = field(default_factory=list)
    launcher_settings: dict[str, Any] = field(default_factory=dict)


def _write(path: Path, sweep: Sweep) -> None:
    write_text(path, json.dumps(asdict(sweep), indent=2))


def create(sweep: Sweep) -> None:
    path = Path(sweep.sweep_dir) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, sweep)


def load(sweep_dir: Path | str) -> Sweep:
    data: dict[str, Any] = json.loads((Path(sweep_dir) / MANIFEST).read_text())
    data["members"] = [Member(**m) for m in data["members"]]
    return Sweep(**data)


def member_dir(sweep_dir: Path | str, member: Member) -> Path:
    """A member's job directory. Members live inside their sweep directory; looking there first keeps a copied or
    moved sweep readable (the manifest records absolute paths)."""
    inside = Path(sweep_dir) / Path(member.job_dir).name
    return inside if inside.is_dir() else Path(member.job_dir)


def is_sweep(path: Path | str) -> bool:
    return (Path(path) / MANIFEST).is_file()


@contextmanager
def updating(sweep_dir: Path | str) -> Iterator[Sweep]:
    """Read-modify-write under an exclusive lock."""
    sweep_dir = Path(sweep_dir)
    with open(sweep_dir / ".sweep.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sweep = load(sweep_dir)
        yield sweep
        _write(sweep_dir / MANIFEST, sweep)
