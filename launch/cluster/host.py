"""Facts about this machine the cluster configuration depends on: binaries, host name, CPUs, memory, ports."""

from __future__ import annotations

import os
import pwd
import random
import shutil
import socket
from pathlib import Path

from launch.cluster.errors import ClusterError

INSTALL_HINT = "install with: apt-get install -y slurm-wlm munge slurmdbd mariadb-server"

# Everything `up`/`down` execute. Checked before anything starts so a missing package is one clear line, not a
# half-started cluster.
REQUIRED_BINARIES = (
    "slurmctld",
    "slurmd",
    "slurmdbd",
    "munged",
    "mariadbd",
    "mariadb-install-db",
    "mariadb",
    "sbatch",
    "sinfo",
    "squeue",
    "scancel",
    "sacctmgr",
    "setpriv",
)

# Daemons live in sbin, which is not on a non-login PATH (e.g. in CI or inside a venv shell).
_EXTRA_PATH = ("/usr/sbin", "/sbin", "/usr/local/sbin")


def find_binary(name: str) -> str:
    search = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_PATH])
    found = shutil.which(name, path=search)
    if found is None:
        raise ClusterError(f"{name} not found; {INSTALL_HINT}")
    return found


def check_binaries() -> dict[str, str]:
    return {name: find_binary(name) for name in REQUIRED_BINARIES}


def short_hostname() -> str:
    """What `hostname -s` prints; slurmd finds its own NodeName this way, so the node line must use it."""
    return socket.gethostname().split(".")[0]


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) or 1


def real_memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise ClusterError("cannot read MemTotal from /proc/meminfo")


def user_ids(name: str) -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ClusterError(f"user {name!r} does not exist; {INSTALL_HINT}") from None
    return entry.pw_uid, entry.pw_gid


def _port_is_free(port: int) -> bool:
    # Bind the wildcard address: a daemon listening on any address would make the port unusable for ours.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("", port))
        except OSError:
            return False
    return True


def free_ports(count: int, low: int = 20000, high: int = 30000) -> list[int]:
    """Distinct free TCP ports below the kernel's ephemeral range (32768+), so an outgoing connection cannot take
    one between this check and the daemon's bind. Random, so two clusters (a user's and the test suite's) on one
    machine do not collide on fixed ports."""
    chosen: list[int] = []
    candidates = random.sample(range(low, high), k=min(500, high - low))
    for port in candidates:
        if port not in chosen and _port_is_free(port):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise ClusterError(f"no {count} free TCP ports found in {low}-{high}")


def is_listening(port: int) -> bool:
    """True when some socket LISTENs on ``port``; read from /proc so probing does not connect to the daemon (an
    empty connection makes slurmctld and slurmdbd log errors)."""
    wanted = f"{port:04X}"
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[1].rsplit(":", 1)[1] == wanted and fields[3] == "0A":  # 0A = TCP_LISTEN
                return True
    return False
