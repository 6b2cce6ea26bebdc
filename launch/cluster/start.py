"""The start sequence: munged → MariaDB → slurmdbd (+ cluster registration) → slurmctld → slurmd → node idle.

Each daemon is started, then waited on until it is ready *and* checked for an early exit, so a crash is reported
at once with the last line of its log rather than as a timeout. Ports are chosen fresh on every start, so a
user's cluster and the test suite's can run side by side.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable

from launch.cluster import client, config, mariadb, munge, procs
from launch.cluster.errors import ClusterError
from launch.cluster.host import find_binary, free_ports, is_listening, real_memory_mb
from launch.cluster.layout import Layout
from launch.cluster.waiting import Deadline, wait_until


def log_hint(layout: Layout, name: str) -> str:
    """The last line a daemon logged, for one-line error messages."""
    for path in (layout.log(name), layout.console(name)):
        try:
            lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            continue
        if lines:
            return f"last log line: {lines[-1].strip()[:200]!r} in {path}"
    return f"no log yet in {layout.log(name)}"


def _daemon_env(layout: Layout) -> dict[str, str]:
    # A minimal environment: the caller's venv, SLURM_* or proxy variables must not leak into the daemons.
    # SLURM_CONF here is also how `procs.sweep_orphans` recognises this cluster's slurmstepd processes.
    return {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": os.environ.get("HOME", "/root"),
        "SLURM_CONF": str(layout.slurm_conf),
    }


def _launch(
    layout: Layout, name: str, argv: list[str], ready: Callable[[], bool], what: str, deadline: Deadline
) -> None:
    pid = procs.spawn(layout, name, argv, _daemon_env(layout))

    def check_alive() -> None:
        if not procs.is_alive(pid, name):
            code = procs.exit_code(pid)
            raise ClusterError(f"{name} exited during start (status {code}); {log_hint(layout, name)}")

    try:
        wait_until(ready, what=what, timeout=max(1.0, deadline.remaining()), check_alive=check_alive)
    except ClusterError as error:
        if "timed out" in str(error):
            raise ClusterError(f"{error}; {log_hint(layout, name)}") from None
        raise


def start_all(layout: Layout, *, cluster_name: str, node_name: str, node_cpus: int, deadline: Deadline) -> None:
    """Start every daemon in dependency order. On failure the caller stops whatever did start."""
    layout.create()
    ctld_port, slurmd_port, dbd_port, db_port = free_ports(4)

    munge.prepare(layout)
    _launch(layout, "munged", munge.argv(layout), lambda: munge.is_ready(layout), "the munge socket", deadline)

    mariadb.ensure_datadir(layout, timeout=max(1.0, deadline.remaining()))
    _launch(layout, "mariadbd", mariadb.argv(layout, db_port), lambda: mariadb.is_ready(layout), "MariaDB", deadline)
    settings = config.Settings(
        cluster_name=cluster_name,
        node_name=node_name,
        node_cpus=node_cpus,
        real_memory_mb=real_memory_mb(),
        slurmctld_port=ctld_port,
        slurmd_port=slurmd_port,
        slurmdbd_port=dbd_port,
        db_port=db_port,
        db_password=secrets.token_hex(16),
        first_job_id=mariadb.max_job_id(layout, cluster_name) + 1,
    )
    mariadb.grant_slurm_user(layout, settings.db_password)
    config.write(layout, settings)

    slurmdbd = [find_binary("slurmdbd"), "-D"]
    _launch(layout, "slurmdbd", slurmdbd, lambda: is_listening(dbd_port), "slurmdbd to listen", deadline)
    client.ensure_cluster_registered(layout.slurm_conf, cluster_name)

    # -c: start with no job state, so jobs of a previous run are not resurrected (FirstJobId keeps ids unique).
    slurmctld = [find_binary("slurmctld"), "-D", "-c"]
    _launch(layout, "slurmctld", slurmctld, lambda: is_listening(ctld_port), "slurmctld to listen", deadline)

    def node_idle() -> bool:
        return client.node_state(layout.slurm_conf, timeout=5.0) == "idle"

    _launch(layout, "slurmd", [find_binary("slurmd"), "-D"], node_idle, f"node {node_name} to be idle", deadline)
