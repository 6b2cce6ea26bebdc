"""A member started by a local sweep stops when that sweep process dies (Linux; elsewhere nothing changes)."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

from launch.interrupt import PARENT_ENV

_PR_SET_PDEATHSIG = 1


def stop_with_parent() -> None:
    """Ask the kernel for SIGINT when the parent goes: the preemption guard then saves and ends INTERRUPTED.

    The variable is taken out of the environment so the ranks this process starts (their parent is this process)
    do not read it as theirs.
    """
    parent = os.environ.pop(PARENT_ENV, None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGINT), 0, 0, 0)
    except (OSError, AttributeError, ValueError):
        return
    if str(os.getppid()) != parent:  # it died before the request above: act as the kernel would have
        os.kill(os.getpid(), signal.SIGINT)
