"""``orchestra status | resume | cancel``: act on what ``records`` says of every member.

Imports neither torch nor Lightning, so a status of a hundred members is one process start and one sacct call.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from launch import manifest
from launch.launcher import cancel_all
from orchestra.errors import UserError
from orchestra.sweep.create import SweepEnded, entry_of
from orchestra.sweep.records import (
    ACTIVE,
    FINISHED,
    TERMINAL,
    MemberRecord,
    SweepReading,
    latest_job_id,
    refresh,
    refresh_reading,
)


def latest_sweep(output_root: Path = Path("runs")) -> Path:
    sweeps = sorted((output_root / "sweeps").glob("*/sweep.json"), key=lambda p: p.stat().st_mtime)
    if not sweeps:
        raise UserError(f"no sweep found under {output_root / 'sweeps'}; pass the sweep directory")
    return sweeps[-1].parent


def open_sweep(path: str | None) -> Path:
    sweep_dir = Path(path) if path else latest_sweep()
    if not manifest.is_sweep(sweep_dir):
        raise UserError(f"{sweep_dir} is not a sweep directory (no sweep.json); pass one made by orchestra sweep")
    return sweep_dir.resolve()


def _log_tail(job_dir: Path, lines: int = 3) -> str:
    log = job_dir / "log.txt"
    candidates = [log] if log.exists() else sorted(job_dir.parent.glob("slurm/*/*_log.out"))
    for path in candidates:
        try:
            text = path.read_text(errors="replace").strip().splitlines()
        except OSError:  # a log we cannot read says nothing; the state line above still stands
            continue
        if text:
            return "\n".join(text[-lines:])
    return ""


COLUMNS = ("#", "member", "state", "attempts", "elapsed", "knn/top1", "job id")
STATE_COLORS = {"FAILED": "red", "DIVERGED": "red", "COMPLETED": "green", "CANCELLED": "yellow",
                "INTERRUPTED": "yellow"}
_ANSI = {"red": "\033[31m", "green": "\033[32m", "yellow": "\033[33m", "reset": "\033[0m"}


def differing_overrides(members: list[manifest.Member]) -> list[list[str]]:
    """Each member's overrides, keeping only the keys whose values differ between members (all of them when
    there is one member): a row that repeats ``launcher=slurm`` on every line says nothing."""
    values = [dict(o.split("=", 1) for o in m.overrides if "=" in o) for m in members]
    keys = {k for v in values for k in v}
    differ = {k for k in keys if len({v.get(k) for v in values}) > 1} if len(members) > 1 else keys
    return [[o for o in m.overrides if o.split("=", 1)[0] in differ] for m in members]


def _cells(record: MemberRecord, overrides: list[str]) -> list[str]:
    member, results = record.member, record.results
    metric = results.get("metrics", {}).get("knn/top1")
    elapsed = record.scheduler.get("elapsed") or (f"{results['wall_time_s']:.0f}s" if "wall_time_s" in results
                                                  else "")
    return [str(member.index), " ".join(overrides), record.state,
            str(max(member.attempts, results.get("attempts", 0))), elapsed,
            "" if metric is None else f"{metric:.4f}", member.job_ids[-1] if member.job_ids else ""]


def _rows(records: list[MemberRecord]) -> list[list[str]]:
    shown = differing_overrides([r.member for r in records])
    # A search sweep's members are its workers (same overrides each): name them by their directory.
    shown = [[r.job_dir.name] if r.job_dir.name.startswith("worker-") else s
             for r, s in zip(records, shown, strict=True)]
    return [_cells(record, overrides) for record, overrides in zip(records, shown, strict=True)]


def status_table(sweep_dir: Path, records: list[MemberRecord]):
    """The rich table of the live view (``--wait``)."""
    from rich.table import Table

    table = Table(title=f"sweep {sweep_dir}")
    for column in COLUMNS:
        table.add_column(column)
    for record, cells in zip(records, _rows(records), strict=True):
        table.add_row(*cells, style=STATE_COLORS.get(record.state))
    return table


def status_text(sweep_dir: Path, records: list[MemberRecord], color: bool = False) -> str:
    """The same table as plain aligned text: rich measures and wraps every cell, ~0.3 s of a 100-member status."""
    table = [list(COLUMNS), *_rows(records)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = [f"sweep {sweep_dir}", "  ".join(h.ljust(w) for h, w in zip(COLUMNS, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    for record, cells in zip(records, table[1:], strict=True):
        line = "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
        tint = STATE_COLORS.get(record.state) if color else None
        lines.append(f"{_ANSI[tint]}{line}{_ANSI['reset']}" if tint else line)
    return "\n".join(lines)


def print_warnings(reading: SweepReading) -> None:
    """One line per manifest entry and per results file that could not be read."""
    for problem in reading.problems:
        print(f"warning: {problem}")
    for record in reading.records:
        if record.unreadable:
            print(f"warning: member {record.member.index}: {record.unreadable}")


def status(path: str | None) -> int:
    sweep_dir = open_sweep(path)
    reading = refresh_reading(sweep_dir)
    records = reading.records
    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    print(status_text(sweep_dir, records, color))
    print_warnings(reading)
    if reading.sweep.kind == "search":
        _search_status(sweep_dir, reading.sweep.search)
    for record in records:
        if record.state in ("FAILED", "DIVERGED"):
            error = record.results.get("error") or _log_tail(record.job_dir)
            label = f"member {record.member.index} {record.state.lower()}:"
            print(f"{_ANSI['red']}{label}{_ANSI['reset']} {error}" if color else f"{label} {error}")
    return 0


def _search_status(sweep_dir: Path, section: dict) -> None:
    """A search sweep's rows above are its workers; its trials come from the study and their results files."""
    from orchestra.search.trials import read_trials, summary_line, trials_text
    from orchestra.search.worker import stop_requested

    rows = read_trials(sweep_dir, section)
    print(f"\n{summary_line(rows, section, stop_requested(sweep_dir))}")
    if rows:
        print(trials_text(rows, section))
    for row in rows:
        if row.state == "FAIL" and row.error:
            print(f"trial {row.number} failed: {row.error}")


def follow(sweep_dir: Path, on_end: SweepEnded, every_s: float = 5.0) -> int:
    """A live table until every member has ended."""
    from rich.console import Console
    from rich.live import Live

    try:
        with Live(console=Console(), refresh_per_second=1) as live:
            while True:
                records = refresh(sweep_dir)
                live.update(status_table(sweep_dir, records))
                if all(record.state in TERMINAL for record in records):
                    break
                time.sleep(every_s)
    except KeyboardInterrupt:  # the scheduler's jobs are not this process's: stop watching, not the sweep
        print(f"stopped following; the sweep goes on. Follow it again with:  orchestra status {sweep_dir}",
              file=sys.stderr)
        return 130
    on_end(sweep_dir)
    return 0 if all(record.state == "COMPLETED" for record in records) else 1


def resume_plan(records: list[MemberRecord], diverged: bool = False) -> tuple[list[manifest.Member],
                                                                             list[manifest.Member]]:
    """(members to run again, DIVERGED members left alone): every member that ended without completing, but a
    DIVERGED one only when asked (as it is, it would diverge again)."""
    ended = [record for record in records if record.state not in ACTIVE | FINISHED]
    todo = [record.member for record in ended if diverged or record.state != "DIVERGED"]
    skipped = [record.member for record in ended if not diverged and record.state == "DIVERGED"]
    return todo, skipped


def _refuse_to_rewrite(reading: SweepReading, what: str) -> None:
    """Acting records states in the manifest, and rewriting it would drop the entries it could not read."""
    if reading.problems:
        raise UserError(f"{what} nothing: {len(reading.problems)} entry(ies) of {manifest.MANIFEST} could not be "
                        f"read (above), and acting would rewrite it; correct them, then run this again")


def resume(path: str | None, on_end: SweepEnded, diverged: bool = False) -> int:
    """Re-run the members that did not complete, in their own job dirs (they continue from last.ckpt)."""
    from orchestra.sweep.create import launch_members

    sweep_dir = open_sweep(path)
    reading = refresh_reading(sweep_dir)
    print_warnings(reading)
    _refuse_to_rewrite(reading, "resumed")
    todo, skipped = resume_plan(reading.records, diverged)
    if skipped:
        print(f"not resuming {len(skipped)} DIVERGED member(s): {', '.join(str(m.index) for m in skipped)} (their "
              f"loss became non-finite; see orchestra status; run them again anyway with orchestra resume "
              f"--diverged)")
    if not todo:
        print(f"nothing to resume in {sweep_dir}: every member is completed, queued or running"
              + (", or diverged" if skipped else ""))
        return 0
    if reading.sweep.kind == "search":  # resuming a cancelled search lets its workers ask for trials again
        from orchestra.search.worker import STOP_FILE

        (sweep_dir / STOP_FILE).unlink(missing_ok=True)
    print(f"resuming {len(todo)} member(s): {', '.join(str(m.index) for m in todo)}")
    with manifest.updating(sweep_dir) as sweep:  # a local runner skips a member still marked CANCELLED
        for member in todo:
            if sweep.members[member.index].state == "CANCELLED":
                sweep.members[member.index].state = member.state = "PENDING"
    return launch_members(sweep_dir, todo, reading.sweep.launcher_settings or {"name": "local"}, on_end,
                          entry=entry_of(reading.sweep))


def cancel(path: str | None) -> int:
    sweep_dir = open_sweep(path)
    reading = refresh_reading(sweep_dir)
    print_warnings(reading)
    _refuse_to_rewrite(reading, "cancelled")
    if reading.sweep.kind == "search":  # first: no worker asks for another trial, whatever happens next
        from orchestra.search.worker import STOP_FILE

        (sweep_dir / STOP_FILE).write_text(f"cancelled at {manifest.now()}\n")
    active = [record.member for record in reading.records if record.state in ACTIVE]
    try:
        with manifest.updating(sweep_dir) as sweep:  # first, so a local runner sees it before its process ends
            for member in active:
                sweep.members[member.index].state = "CANCELLED"
            # ids read under the lock: a local retry may have started a new process since `refresh`
            active = [sweep.members[member.index] for member in active]
    except manifest.ManifestError as err:  # damaged since it was read a moment ago; it was not written
        raise UserError(str(err)) from None
    cancel_all([job_id for job_id in map(latest_job_id, active) if job_id is not None])
    print(f"cancelled {len(active)} member(s) of {sweep_dir}")
    return 0
