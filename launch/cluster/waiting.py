"""Waiting on conditions instead of sleeping fixed times: the machine may be shared with CPU-heavy work, so every
wait polls a condition and gives up only after a generous deadline."""

from __future__ import annotations

import time
from collections.abc import Callable

from launch.cluster.errors import ClusterError


class Deadline:
    """A point in time shared by several steps, so ``up(timeout=60)`` bounds the whole start, not each step."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._end - time.monotonic())

    def expired(self) -> bool:
        return self.remaining() <= 0.0


def wait_until(
    condition: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    interval: float = 0.2,
    check_alive: Callable[[], None] | None = None,
) -> None:
    """Poll ``condition`` until it is true; raise ClusterError naming ``what`` after ``timeout`` seconds.

    ``check_alive`` runs before each poll and should raise as soon as the daemon being waited on has died, so a
    crash is reported at once with its log instead of after the full timeout.
    """
    end = time.monotonic() + timeout
    while True:
        if check_alive is not None:
            check_alive()
        if condition():
            return
        if time.monotonic() >= end:
            raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
