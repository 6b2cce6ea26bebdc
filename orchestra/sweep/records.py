"""ONE view of a sweep's members: what the manifest, the launchers' schedulers and the results files say together.

``orchestra status`` / ``resume`` / ``cancel`` and ``orchestra report`` all read members through here, so they
can never disagree on a member's state. Imports neither torch nor Lightning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launch import manifest
from launch.job_id import JobId
from launch.launcher import launcher_for, states_of
from launch.slurm.queue import QUEUED_STARTED, QUEUED_WAITING
from orchestra.errors import UserError
from orchestra.jobstate.results import read_checked_results

ACTIVE = {"PENDING", "RUNNING"}
# INTERRUPTED (stopped by a person, last.ckpt saved) resumes like PREEMPTED; DIVERGED (non-finite loss) would
# diverge again, so resume leaves it alone unless asked.
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NOT_SUBMITTED", "INTERRUPTED", "DIVERGED",
            "PRUNED"}
# Ended for good: trained to the end, or stopped early by a search's pruner (never run again by resume).
FINISHED = {"COMPLETED", "PRUNED"}
# What the job body says of an end it saw itself; a kill it did not see leaves RUNNING behind.
ENDS_SEEN_BY_THE_JOB = ("FAILED", "PREEMPTED", "INTERRUPTED", "DIVERGED")
SCHEDULER_ACTIVE = {**dict.fromkeys(QUEUED_WAITING, "PENDING"), **dict.fromkeys(QUEUED_STARTED, "RUNNING")}
SCHEDULER_FAILED = {"FAILED", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}


@dataclass
class MemberRecord:
    member: manifest.Member
    job_dir: Path
    state: str
    results: dict[str, Any]  # the results file so far; {} before the job started or when it is unreadable
    scheduler: dict[str, str]  # what the launcher said of the member's latest job ({} when nothing)
    unreadable: str | None = None  # why the results file could not be read


def latest_job_id(member: manifest.Member) -> JobId | None:
    return JobId.parse(member.job_ids[-1]) if member.job_ids else None


def scheduler_view(members: Sequence[manifest.Member]) -> dict[str, dict[str, str]]:
    """What each member's launcher says of its latest job, keyed by the job id as the manifest writes it; one
    query per launcher, and never a hang (an unreachable scheduler answers nothing)."""
    job_ids = [job_id for job_id in map(latest_job_id, members) if job_id is not None]
    return {str(job_id): state for job_id, state in states_of(job_ids).items()}


def member_state(member: manifest.Member, scheduler: dict[str, dict[str, str]], results: dict[str, Any]) -> str:
    """One state per member. The job's own results file wins for COMPLETED/FAILED/DIVERGED (a Python error must
    never read as COMPLETED; a divergence ends the job with an error exit that a scheduler calls FAILED); the
    scheduler decides while the job is queued, running, cancelled or out of time.
    """
    state = _merged_state(member, scheduler, results)
    return "DIVERGED" if state == "FAILED" and results.get("state") == "DIVERGED" else state


def _merged_state(member: manifest.Member, scheduler: dict[str, dict[str, str]], results: dict[str, Any]) -> str:
    own = results.get("state")
    if own in FINISHED:
        return own
    job_id = latest_job_id(member)
    if job_id is None and not own:
        return "NOT_SUBMITTED" if member.state != "CANCELLED" else "CANCELLED"  # e.g. sbatch refused the sweep
    seen = scheduler.get(str(job_id), {}).get("state", "") if job_id else ""
    if job_id and launcher_for(job_id.launcher).records_member_end:
        if member.state == "RUNNING" and not seen:  # the process is gone without the launcher recording its end
            return own if own in ENDS_SEEN_BY_THE_JOB else "FAILED"  # killed without a word (kill -9)
        return member.state
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


def load_manifest(sweep_dir: Path) -> tuple[manifest.Sweep, list[str]]:
    """The manifest's readable members and one line per entry that is not (``manifest.read``); ``UserError`` when
    nothing in it can be read."""
    try:
        return manifest.read(sweep_dir)
    except manifest.ManifestError as err:
        raise UserError(str(err)) from None


def _record(sweep_dir: Path, member: manifest.Member, scheduler: dict[str, dict[str, str]]) -> MemberRecord:
    job_dir = manifest.member_dir(sweep_dir, member)
    unreadable = None
    try:
        results = read_checked_results(job_dir / "results.json")
    except UserError as err:  # not JSON, not the shape a job writes, or not readable at all
        results, unreadable = {}, str(err)  # its state then comes from the manifest and the scheduler alone
    job_id = latest_job_id(member)
    return MemberRecord(member=member, job_dir=job_dir, state=member_state(member, scheduler, results),
                        results=results, scheduler=scheduler.get(str(job_id), {}) if job_id else {},
                        unreadable=unreadable)


@dataclass
class SweepReading:
    sweep: manifest.Sweep
    records: list[MemberRecord]
    problems: list[str] = field(default_factory=list)  # one line per manifest entry that could not be read


def read_records(sweep_dir: Path) -> SweepReading:
    """Every readable member's record, read without changing anything (the report's view)."""
    sweep, problems = load_manifest(sweep_dir)
    scheduler = scheduler_view(sweep.members)
    return SweepReading(sweep, [_record(sweep_dir, member, scheduler) for member in sweep.members], problems)


def refresh_reading(sweep_dir: Path) -> SweepReading:
    """``read_records``, with every state written back to the manifest (status, resume and cancel act on it) when
    the whole manifest was readable; one with problems is left byte for byte as it is."""
    sweep, problems = load_manifest(sweep_dir)
    scheduler = scheduler_view(sweep.members)  # outside the lock: a slow sacct must not hold up the launchers
    if problems:
        return SweepReading(sweep, [_record(sweep_dir, member, scheduler) for member in sweep.members], problems)
    try:
        with manifest.updating(sweep_dir) as current:
            records = [_record(sweep_dir, member, scheduler) for member in current.members]
            for record in records:
                record.member.state = record.state
    except manifest.ManifestError as err:  # damaged since it was read a moment ago; it was not written
        raise UserError(str(err)) from None
    return SweepReading(current, records)


def refresh(sweep_dir: Path) -> list[MemberRecord]:
    """Every member's record, its state written back to the manifest."""
    return refresh_reading(sweep_dir).records
