"""Daemon processes by recorded PID: spawn detached, check liveness, stop with TERM then KILL, sweep orphans.

PIDs are recorded in files so that `down` and `status` work from any process, not only the one that ran `up`.
Liveness also checks the process name, so a PID recycled by an unrelated process after a reboot is not mistaken
for our daemon (and never signalled).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from launch.cluster.layout import Layout

# Popen handles of daemons this process started. Kept so they are reaped when they exit (an unreaped child stays a
# zombie whose PID still "exists") and are never garbage-collected while running.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def spawn(layout: Layout, name: str, argv: list[str], env: dict[str, str]) -> int:
    """Start a foreground daemon in its own session: it outlives the `up` command and a Ctrl-C in the user's
    terminal does not reach it."""
    with open(layout.console(name), "ab") as console:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=layout.root,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    layout.pidfile(name).write_text(f"{proc.pid}\n")
    return proc.pid


def read_pid(layout: Layout, name: str) -> int | None:
    try:
        return int(layout.pidfile(name).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(comm, state) from /proc/<pid>/stat, or None when the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm is in parentheses and may itself contain spaces or parentheses; the state follows the last ')'.
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    state = raw[raw.rindex(")") + 2 :].split()[0]
    return comm, state


def is_alive(pid: int | None, name: str) -> bool:
    if pid is None:
        return False
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]
        return False
    stat = _proc_stat(pid)
    if stat is None or stat[1] in ("Z", "X"):
        return False
    # setpriv execs munged in place; for an instant after spawn the name is still setpriv's.
    return stat[0] == name[:15] or (name == "munged" and stat[0] == "setpriv")


def exit_code(pid: int) -> int | None:
    child = _CHILDREN.get(pid)
    return None if child is None else child.poll()


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_gone(pid: int, name: str, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while is_alive(pid, name):
        if time.monotonic() >= end:
            return False
        time.sleep(0.1)
    return True


def wait_reaped(pids: list[int], timeout: float) -> None:
    """Best effort: give init a moment to reap dead daemons whose parent (an earlier `up`) has exited, so `ps` right
    after `down` shows nothing, not even <defunct> entries. On these VMs PID 1 reaps about every 2 s, so this waits
    for all PIDs together rather than one after another. Never fails."""
    end = time.monotonic() + timeout
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < end:
        time.sleep(0.1)


def stop(layout: Layout, name: str, grace: float = 10.0) -> int | None:
    """SIGTERM, then SIGKILL after ``grace`` seconds (a slurmd stuck in an auth failure ignores SIGTERM).
    Returns the PID it stopped, if the daemon was running."""
    pid = read_pid(layout, name)
    stopped = None
    if pid is not None and is_alive(pid, name):
        _signal(pid, signal.SIGTERM)
        if not _wait_gone(pid, name, grace):
            _signal(pid, signal.SIGKILL)
            _wait_gone(pid, name, 5.0)
        stopped = pid
    layout.pidfile(name).unlink(missing_ok=True)
    return stopped


def _children_by_parent() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(raw[raw.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _descendants(pid: int, children: dict[int, list[int]]) -> list[int]:
    found: list[int] = []
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        found.append(child)
        stack.extend(children.get(child, []))
    return found


def sweep_orphans(slurm_conf: Path) -> list[int]:
    """SIGKILL slurmstepd processes left behind by this cluster's slurmd, with the job processes under them;
    returns the PIDs killed.

    A slurmstepd whose slurmd is gone retries forever and its job keeps running. The stepd inherits slurmd's
    environment, and slurmd is started with SLURM_CONF pointing at this cluster's slurm.conf, which tells our
    orphans apart from another cluster's. The job tree is collected before anything is killed: once the stepd
    dies its children are re-parented to init and can no longer be found by parentage.
    """
    marker = f"SLURM_CONF={slurm_conf}".encode()
    children = _children_by_parent()
    doomed: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        stat = _proc_stat(pid)
        if stat is None or stat[0] != "slurmstepd":
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environ:
            doomed.extend([pid, *_descendants(pid, children)])
    for pid in doomed:
        _signal(pid, signal.SIGKILL)
    return doomed
