"""The sweep manifest: one JSON file listing every member, the only record status/resume/report read.

Updates take an exclusive lock on a sibling lock file and replace the JSON atomically, so two commands touching
one sweep never interleave half-written state.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import MISSING, asdict, dataclass, field, fields
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
    kind: str = "grid"  # "search": the members are workers of an Optuna study (orchestra/search/)
    search: dict[str, Any] = field(default_factory=dict)  # a search sweep's space, sampler, budget, objective, pruner


def _write(path: Path, sweep: Sweep) -> None:
    write_text(path, json.dumps(asdict(sweep), indent=2))


def create(sweep: Sweep) -> None:
    path = Path(sweep.sweep_dir) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, sweep)


class ManifestError(ValueError):
    """A sweep.json that cannot be read at all, or (from ``load``) one with entries that are not what we write;
    the message is one line naming the file and a fix."""


# Whether a JSON value fits a field, by the field's annotation (a string: this module has postponed annotations).
_FITS = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
    "str": lambda v: isinstance(v, str),
    "str | None": lambda v: v is None or isinstance(v, str),
    "list[str]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "dict[str, Any]": lambda v: isinstance(v, dict),
}
_WANTED = {"int": "a whole number >= 0", "str": "text", "str | None": "text or null", "list[str]": "a list of text",
           "dict[str, Any]": "an object"}


def _printable(value: Any) -> bool:
    """Whether every string in it can be printed or used as a path: JSON may escape a lone surrogate (\\ud800)
    that UTF-8 cannot encode."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(value: Any) -> str:  # ASCII (json.dumps escapes the rest), so always printable
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _fields_of(cls: type, data: dict[str, Any], defaults: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The dataclass's fields found in ``data`` with the right type, and what is wrong with the others. A wrong or
    missing field takes ``defaults``' value, if any, else its dataclass default; keys we do not know are ignored."""
    kept: dict[str, Any] = {}
    wrong: list[str] = []
    for f in fields(cls):
        if f.name == "members":
            continue
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:  # we always write it
                wrong.append(f"'{f.name}' is missing")
            if f.name in defaults:
                kept[f.name] = defaults[f.name]
            continue
        fits = _FITS.get(str(f.type), lambda v: True)
        if fits(data[f.name]):
            kept[f.name] = data[f.name]
        else:
            wrong.append(f"'{f.name}' is {_shown(data[f.name])}, not {_WANTED[str(f.type)]}")
            if f.name in defaults:
                kept[f.name] = defaults[f.name]
    return kept, wrong


def _member(path: Path, position: int, entry: Any) -> tuple[Member | None, str | None]:
    where = f"{path}: members[{position}]"
    fix = "correct or remove that entry (orchestra leaves this file as it is until then)"
    if not isinstance(entry, dict):
        return None, f"{where} is {_shown(entry)}, not a member object; {fix}"
    if not _printable(entry):
        return None, f"{where} holds text that is not valid Unicode ({_shown(entry)}); {fix}"
    kept, wrong = _fields_of(Member, entry, {})
    if not wrong and kept["index"] != position:  # commands address members by index in the list
        wrong.append(f"'index' is {kept['index']}, not its position {position}")
    if not wrong and (not kept["job_dir"] or "\x00" in kept["job_dir"]):
        wrong.append(f"'job_dir' is {_shown(kept['job_dir'])}, not a path")
    if wrong:
        return None, f"{where}: {'; '.join(wrong)}; {fix}"
    return Member(**kept), None


def read(sweep_dir: Path | str) -> tuple[Sweep, list[str]]:
    """The manifest with every member that reads as one, and one line (file, entry, fix) per thing that does not.

    Raises ``ManifestError`` only when nothing can be read (not JSON, not an object, no list of members). Never
    writes: a file with problems must stay as the user left it.
    """
    path = Path(sweep_dir) / MANIFEST
    try:
        data = json.loads(path.read_bytes())
    except OSError as err:
        raise ManifestError(f"{path} could not be read ({err.strerror or err}); fix the file system or pass "
                            f"another sweep directory") from None
    except (ValueError, RecursionError) as err:  # not JSON, not UTF-8 text, or nested beyond the parser
        raise ManifestError(f"{path} is not a readable sweep manifest ({err}); restore it from a backup or start "
                            f"a new sweep") from None
    if not isinstance(data, dict) or not isinstance(data.get("members"), list):
        what = "has no list of members" if isinstance(data, dict) else f"holds a {type(data).__name__}"
        raise ManifestError(f"{path} {what}, so it is not a sweep manifest; restore it from a backup or start a "
                            f"new sweep")
    if not _printable({k: v for k, v in data.items() if k != "members"}):
        raise ManifestError(f"{path} holds text that is not valid Unicode (an escaped lone surrogate such as "
                            f"\\ud800); restore it from a backup or start a new sweep")
    defaults = {"sweep_dir": str(sweep_dir), "command": [], "launcher": "local", "created_at": ""}
    kept, wrong = _fields_of(Sweep, data, defaults)
    problems = [f"{path}: {what}; correct it (orchestra leaves this file as it is until then)" for what in wrong]
    members = []
    for position, entry in enumerate(data["members"]):
        member, problem = _member(path, position, entry)
        if member is not None:
            members.append(member)
        else:
            problems.append(problem)
    return Sweep(**kept, members=members), problems


def load(sweep_dir: Path | str) -> Sweep:
    """The whole manifest, or ``ManifestError`` naming the first problem: whoever rewrites the file must have read
    all of it."""
    sweep, problems = read(sweep_dir)
    if problems:
        raise ManifestError(problems[0] if len(problems) == 1 else f"{problems[0]} (and {len(problems) - 1} more)")
    return sweep


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
