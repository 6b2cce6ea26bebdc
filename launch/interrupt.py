"""Stopping a local sweep on Ctrl+C or SIGTERM without losing a member or leaving one behind.

Members run in sessions of their own, so a Ctrl+C at the terminal reaches only the ``orchestra sweep`` process;
it passes SIGINT on to every running member's process group (its DDP ranks included), and each member saves
``last.ckpt`` at its next batch boundary and exits INTERRUPTED. The sweep starts nothing new, waits for them, and
says how to resume. A second signal says it is still waiting; a third kills the members (their last checkpoint,
from the latest validation or an earlier save, still resumes them).

Should the sweep process die without a word (SIGKILL), each member's body asks the kernel for SIGINT when its
parent goes (``PARENT_ENV``), so none trains on as an orphan writing to a log nobody follows.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

PARENT_ENV = "ORCHESTRA_STOP_WITH_PARENT"  # the pid whose death should interrupt the member (read by the body)
KILL_AFTER = 3  # signals received before the members are killed rather than waited for


class SweepStop:
    """Whether the sweep was asked to stop, and the process groups of the members running now."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.signals = 0
        self._groups: set[int] = set()
        self._lock = threading.Lock()

    def started(self, pid: int) -> None:
        # Under the lock that ``request`` snapshots under: a member is asked exactly once, by one side or the other
        # (asked twice, its second SIGINT could cut short the results it writes on the first).
        with self._lock:
            self._groups.add(pid)  # start_new_session: the member's pid is its process group id
            raced = self.requested.is_set()
        if raced:  # it started after the signal was passed on: it is asked here
            _signal_group(pid, signal.SIGINT)

    def ended(self, pid: int) -> None:
        with self._lock:
            self._groups.discard(pid)

    def request(self, signum: int, frame: Any = None) -> None:
        self.signals += 1
        with self._lock:
            self.requested.set()
            groups = sorted(self._groups)
        if self.signals >= KILL_AFTER:
            print(f"\norchestra: killing {len(groups)} member(s); each resumes from its last checkpoint",
                  file=sys.stderr, flush=True)
            for group in groups:
                _signal_group(group, signal.SIGKILL)
            return
        if self.signals == 1:
            print(f"\norchestra: {signal.Signals(signum).name}: asking {len(groups)} running member(s) to save and "
                  f"stop; starting no others", file=sys.stderr, flush=True)
            for group in groups:
                _signal_group(group, signal.SIGINT)
        else:
            print(f"orchestra: still waiting for {len(groups)} member(s) to save; signal "
                  f"{KILL_AFTER - self.signals} more time(s) to kill them", file=sys.stderr, flush=True)


def _signal_group(group: int, signum: int) -> None:
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        pass


@contextmanager
def stop_on_signals(stop: SweepStop) -> Iterator[SweepStop]:
    """SIGINT and SIGTERM go to ``stop`` while the block runs (main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {signum: signal.signal(signum, stop.request) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
