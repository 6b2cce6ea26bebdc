"""What an attempt that ended by an exception amounts to: the state and the one error line results.json records.

PREEMPTED and INTERRUPTED attempts saved ``last.ckpt`` (or had not started training) and resume as they are;
DIVERGED attempts trained into non-finite numbers and are not re-run unless asked; anything else is FAILED.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from orchestra.errors import UserError

DIVERGED_EXIT_CODE = 65  # shared with launch.member: the member ran, its numbers did not hold


def is_preemption(err: BaseException) -> bool:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from orchestra.jobstate.preemption import Preempted, stopped_for_requeue

    # submitit's requeue handler ends the process with SystemExit from inside our batch-start save
    return isinstance(err, Preempted | SIGTERMException) or (isinstance(err, SystemExit) and stopped_for_requeue())


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0][:500] if lines else ""


def outcome(err: BaseException) -> tuple[str, str]:
    """(state, error line) for an attempt that ``err`` ended."""
    from orchestra.callbacks.divergence import Diverged
    from orchestra.jobstate.preemption import Preempted

    if isinstance(err, Diverged):
        return "DIVERGED", str(err)
    if isinstance(err, KeyboardInterrupt):
        return "INTERRUPTED", ""
    if isinstance(err, Preempted):
        return err.state, ""
    if is_preemption(err):
        return "PREEMPTED", ""
    if isinstance(err, UserError | ValueError):
        return "FAILED", _one_line(str(err))
    return "FAILED", f"{type(err).__name__}: {_one_line(str(err))}"


def _stop_now(signum: int, frame: object) -> None:
    from orchestra.jobstate.preemption import Preempted

    raise Preempted(signum)  # nothing to save yet: the attempt ends PREEMPTED, results.json says so


@contextmanager
def stops_at_terminate() -> Iterator[None]:
    """SIGTERM before training starts (imports, data, floors) ends the attempt with a results file that says so,
    where the default action killed it with results.json still RUNNING. The preemption guard takes over in fit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _stop_now)
    # A local sweep starts members with both blocked until here, where results.json exists and an interruption
    # ends the attempt as INTERRUPTED/PREEMPTED rather than killing the interpreter halfway through its imports.
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def interrupts_held(held: bool) -> Iterator[None]:
    """While an attempt that is ending INTERRUPTED writes its results, more SIGINTs only repeat the request: they
    are ignored until the block ends (main thread only), so a second Ctrl+C cannot cut the results file short."""
    if not held or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
