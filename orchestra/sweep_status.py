"""``orchestra status | resume | cancel``: what the manifest, the scheduler and the results files say together.

Imports neither torch nor Lightning, so a status of a hundred members is one process start and one sacct call.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from launch import manifest, slurm
from orchestra.errors import UserError
from orchestra.results import read_results

ACTIVE = {"PENDING", "RUNNING"}
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NOT_SUBMITTED"}
SCHEDULER_ACTIVE = {**dict.fromkeys(slurm.QUEUED_WAITING, "PENDING"), **dict.fromkeys(slurm.QUEUED_STARTED, "RUNNING")}
SCHEDULER_FAILED = {"FAILED", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}


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


def _pid_alive(job_id: str) -> bool:
    """Whether the member's local process still runs. Its pid may since belong to another program (pids are
    reused), and cancel must never signal that one: where /proc exists, the command line must be a job body's."""
    try:
        pid = int(job_id.split(":", 1)[1])
        os.kill(pid, 0)
    except (ProcessLookupError, ValueError, IndexError):
        return False
    except PermissionError:
        return True
    try:
        return b"orchestra.job" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # gone in between, or a system without /proc
    except OSError:
        return True


def member_state(member: manifest.Member, scheduler: dict[str, dict[str, str]], results: dict) -> str:
    """One state per member. The job's own results file wins for COMPLETED/FAILED (a Python error must never read
    as COMPLETED); the scheduler decides while the job is queued, running, cancelled or out of time.
    """
    own = results.get("state")
    if own == "COMPLETED":
        return "COMPLETED"
    if not member.job_ids and not own:
        return "NOT_SUBMITTED" if member.state != "CANCELLED" else "CANCELLED"  # e.g. sbatch refused the sweep
    job_id = member.job_ids[-1] if member.job_ids else None
    if job_id and job_id.startswith("local:"):
        if member.state == "RUNNING" and not _pid_alive(job_id):
            return own if own in ("FAILED", "PREEMPTED") else "FAILED"  # killed without a word (kill -9)
        return member.state
    seen = scheduler.get(job_id, {}).get("state", "") if job_id else ""
    if seen in SCHEDULER_ACTIVE:
        return SCHEDULER_ACTIVE[seen]
    if seen.startswith("CANCELLED"):
        return "CANCELLED"
    if seen in SCHEDULER_FAILED or own == "FAILED":
        return "FAILED"
    if seen in ("TIMEOUT", "PREEMPTED"):
        return seen
    if seen == "COMPLETED":  # the scheduler's job ended cleanly but the member did not finish: it was stopped
        return own if own in TERMINAL else "FAILED"
    return member.state if member.state in ACTIVE | {"CANCELLED"} else (own or member.state)


def refresh(sweep_dir: Path) -> list[dict]:
    """Every member's current state, written back to the manifest."""
    sweep = manifest.load(sweep_dir)
    job_ids = [m.job_ids[-1] for m in sweep.members if m.job_ids and not m.job_ids[-1].startswith("local:")]
    scheduler = {}
    if job_ids:
        scheduler = slurm.scheduler_states(job_ids)
    rows = []
    with manifest.updating(sweep_dir) as current:
        for member in current.members:
            unreadable = None
            try:
                results = read_results(manifest.member_dir(sweep_dir, member) / "results.json")
            except UserError as err:  # unreadable as JSON, or not readable at all
                results, unreadable = {}, str(err)
            member.state = member_state(member, scheduler, results)
            job_id = member.job_ids[-1] if member.job_ids else ""
            rows.append({"member": member, "results": results, "scheduler": scheduler.get(job_id, {}),
                         "unreadable": unreadable})
    return rows


def _log_tail(job_dir: str, lines: int = 3) -> str:
    log = Path(job_dir) / "log.txt"
    candidates = [log] if log.exists() else sorted(Path(job_dir).parent.glob("slurm/*/*_log.out"))
    for path in candidates:
        text = path.read_text(errors="replace").strip().splitlines()
        if text:
            return "\n".join(text[-lines:])
    return ""


COLUMNS = ("#", "overrides", "state", "attempts", "elapsed", "knn/top1", "job id")
STATE_COLORS = {"FAILED": "red", "COMPLETED": "green", "CANCELLED": "yellow"}
_ANSI = {"red": "\033[31m", "green": "\033[32m", "yellow": "\033[33m", "reset": "\033[0m"}


def _cells(row: dict) -> list[str]:
    member, results = row["member"], row["results"]
    metric = results.get("metrics", {}).get("knn/top1")
    elapsed = row["scheduler"].get("elapsed") or (f"{results['wall_time_s']:.0f}s" if "wall_time_s" in results
                                                 else "")
    return [str(member.index), " ".join(member.overrides), member.state,
            str(max(member.attempts, results.get("attempts", 0))), elapsed,
            "" if metric is None else f"{metric:.4f}", member.job_ids[-1] if member.job_ids else ""]


def status_table(sweep_dir: Path, rows: list[dict]):
    """The rich table of the live view (``--wait``)."""
    from rich.table import Table

    table = Table(title=f"sweep {sweep_dir}")
    for column in COLUMNS:
        table.add_column(column)
    for row in rows:
        table.add_row(*_cells(row), style=STATE_COLORS.get(row["member"].state))
    return table


def status_text(sweep_dir: Path, rows: list[dict], color: bool = False) -> str:
    """The same table as plain aligned text: rich measures and wraps every cell, ~0.3 s of a 100-member status."""
    table = [list(COLUMNS), *(_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    lines = [f"sweep {sweep_dir}", "  ".join(h.ljust(w) for h, w in zip(COLUMNS, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    for row, cells in zip(rows, table[1:], strict=True):
        line = "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
        tint = STATE_COLORS.get(row["member"].state) if color else None
        lines.append(f"{_ANSI[tint]}{line}{_ANSI['reset']}" if tint else line)
    return "\n".join(lines)


def status(path: str | None) -> int:
    sweep_dir = open_sweep(path)
    rows = refresh(sweep_dir)
    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    print(status_text(sweep_dir, rows, color))
    for row in rows:
        if row["unreadable"]:
            print(f"warning: member {row['member'].index}: {row['unreadable']}")
        if row["member"].state == "FAILED":
            error = row["results"].get("error") or _log_tail(row["member"].job_dir)
            label = f"member {row['member'].index} failed:"
            print(f"{_ANSI['red']}{label}{_ANSI['reset']} {error}" if color else f"{label} {error}")
    return 0


def follow(sweep_dir: Path, every_s: float = 5.0) -> int:
    """A live table until every member has ended."""
    from rich.console import Console
    from rich.live import Live

    with Live(console=Console(), refresh_per_second=1) as live:
        while True:
            rows = refresh(sweep_dir)
            live.update(status_table(sweep_dir, rows))
            if all(row["member"].state in TERMINAL for row in rows):
                break
            time.sleep(every_s)
    from orchestra.reporting import print_report

    print_report(sweep_dir)
    return 0 if all(row["member"].state == "COMPLETED" for row in rows) else 1


def resume(path: str | None) -> int:
    """Re-run the members that did not complete, in their own job dirs (they continue from last.ckpt)."""
    from orchestra.sweeping import launch_members

    sweep_dir = open_sweep(path)
    rows = refresh(sweep_dir)
    todo = [row["member"] for row in rows if row["member"].state not in ACTIVE | {"COMPLETED"}]
    if not todo:
        print(f"nothing to resume in {sweep_dir}: every member is completed, queued or running")
        return 0
    print(f"resuming {len(todo)} member(s): {', '.join(str(m.index) for m in todo)}")
    return launch_members(sweep_dir, todo, manifest.load(sweep_dir).launcher_settings or {"name": "local"})


def cancel(path: str | None) -> int:
    sweep_dir = open_sweep(path)
    rows = refresh(sweep_dir)
    active = [row["member"] for row in rows if row["member"].state in ACTIVE]
    with manifest.updating(sweep_dir) as sweep:  # first, so a local runner sees it before its process ends
        for member in active:
            sweep.members[member.index].state = "CANCELLED"
        # ids read under the lock: a local retry may have started a new process since `refresh`
        active = [sweep.members[member.index] for member in active]
    slurm_ids = [m.job_ids[-1] for m in active if m.job_ids and not m.job_ids[-1].startswith("local:")]
    if slurm_ids:
        slurm.cancel(slurm_ids)
    for member in active:
        if member.job_ids and member.job_ids[-1].startswith("local:") and _pid_alive(member.job_ids[-1]):
            os.kill(int(member.job_ids[-1].split(":", 1)[1]), 15)
    print(f"cancelled {len(active)} member(s) of {sweep_dir}")
    return 0
