"""DevCluster: a real single-node SLURM cluster (munged, MariaDB, slurmdbd, slurmctld, slurmd) in one state dir.

For development and tests on one machine, as root. Everything listens on 127.0.0.1 only; clients find it through
SLURM_CONF (see `env()`), so nothing is written to /etc and a system SLURM, if any, is untouched.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from launch.cluster import client, config, mariadb, munge, procs
from launch.cluster.errors import ClusterError
from launch.cluster.host import (
    check_binaries,
    cpu_count,
    find_binary,
    free_ports,
    is_listening,
    real_memory_mb,
    short_hostname,
)
from launch.cluster.layout import DEFAULT_STATE_DIR, Layout
from launch.cluster.waiting import Deadline, wait_until

# Start order; `down` stops them in reverse so each daemon's dependency outlives it (slurmctld flushes accounting
# records to slurmdbd as it stops; slurmdbd needs MariaDB; everything authenticates through munged).
DAEMONS = ("munged", "mariadbd", "slurmdbd", "slurmctld", "slurmd")

# Declared CPUs when the machine has fewer: on a 2-core box, 8 slots let several test jobs run at once.
MIN_DECLARED_CPUS = 8

# Bound on how long `down` waits for cancelled jobs to leave the queue before stopping daemons anyway.
DRAIN_TIMEOUT_S = 20.0
DAEMON_STOP_GRACE_S = 10.0


class DevCluster:
    def __init__(
        self, state_dir: str | Path = DEFAULT_STATE_DIR, *, cluster_name: str = "orchestra", node_cpus: int = 0
    ) -> None:
        # SLURM lower-cases cluster names and uses them in table names; insist on a plain identifier.
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", cluster_name):
            raise ClusterError(f"cluster name {cluster_name!r} must be lower-case letters, digits or _")
        self.layout = Layout(Path(state_dir).absolute())
        self.cluster_name = cluster_name
        self.node_name = short_hostname()
        self.node_cpus = node_cpus or max(MIN_DECLARED_CPUS, cpu_count())
        self.warnings: list[str] = []  # things `down` had to force; the CLI prints them

    @property
    def slurm_conf(self) -> Path:
        return self.layout.slurm_conf

    def env(self) -> dict[str, str]:
        """What a client process (sbatch, submitit, a job that requeues itself) needs to reach this cluster."""
        return {"SLURM_CONF": str(self.slurm_conf)}

    # -- queries ---------------------------------------------------------------------------------------------

    def _alive_pids(self) -> dict[str, int | None]:
        pids: dict[str, int | None] = {}
        for name in DAEMONS:
            pid = procs.read_pid(self.layout, name)
            pids[name] = pid if procs.is_alive(pid, name) else None
        return pids

    def status(self) -> dict[str, Any]:
        pids = self._alive_pids()
        alive = [name for name, pid in pids.items() if pid is not None]
        node_state = client.node_state(self.slurm_conf) if pids["slurmctld"] and self.slurm_conf.exists() else None
        return {
            "state_dir": str(self.layout.root),
            "slurm_conf": str(self.slurm_conf),
            "running": len(alive) == len(DAEMONS),
            "daemons": pids,
            "node": self.node_name,
            "node_state": node_state,
        }

    # -- up --------------------------------------------------------------------------------------------------

    def up(self, timeout: float = 60.0) -> None:
        """Start every daemon and wait until the node is idle. A no-op when all daemons already run; a partly
        running cluster (say, one daemon crashed) is stopped and started afresh."""
        deadline = Deadline(timeout)
        self.warnings = []
        with self._locked():
            pids = self._alive_pids()
            if all(pids.values()):
                return
            if any(pids.values()):
                self._stop()
            check_binaries()
            if os.geteuid() != 0:
                raise ClusterError("the dev cluster must be started as root (slurmd and munged need it)")
            try:
                self._start(deadline)
            except ClusterError:
                self._stop()
                raise
            except Exception as error:
                self._stop()
                raise ClusterError(f"cluster start failed: {type(error).__name__}: {error}") from error
            except BaseException:  # Ctrl-C mid-start: leave no half-started daemons behind
                self._stop()
                raise

    def _start(self, deadline: Deadline) -> None:
        layout = self.layout
        layout.create()
        ctld_port, slurmd_port, dbd_port, db_port = free_ports(4)
        env = self._daemon_env()

        munge.prepare(layout)
        self._launch("munged", munge.argv(layout), env, lambda: munge.is_ready(layout), "the munge socket", deadline)

        mariadb.ensure_datadir(layout, timeout=max(1.0, deadline.remaining()))
        self._launch(
            "mariadbd", mariadb.argv(layout, db_port), env, lambda: mariadb.is_ready(layout), "MariaDB", deadline
        )
        settings = config.Settings(
            cluster_name=self.cluster_name,
            node_name=self.node_name,
            node_cpus=self.node_cpus,
            real_memory_mb=real_memory_mb(),
            slurmctld_port=ctld_port,
            slurmd_port=slurmd_port,
            slurmdbd_port=dbd_port,
            db_port=db_port,
            db_password=secrets.token_hex(16),
            first_job_id=mariadb.max_job_id(layout, self.cluster_name) + 1,
        )
        mariadb.grant_slurm_user(layout, settings.db_password)
        config.write(layout, settings)

        slurmdbd = [find_binary("slurmdbd"), "-D"]
        self._launch("slurmdbd", slurmdbd, env, lambda: is_listening(dbd_port), "slurmdbd to listen", deadline)
        client.ensure_cluster_registered(self.slurm_conf, self.cluster_name)

        # -c: start with no job state, so jobs of a previous run are not resurrected.
        slurmctld = [find_binary("slurmctld"), "-D", "-c"]
        self._launch("slurmctld", slurmctld, env, lambda: is_listening(ctld_port), "slurmctld to listen", deadline)
        self._launch(
            "slurmd",
            [find_binary("slurmd"), "-D"],
            env,
            lambda: client.node_state(self.slurm_conf, timeout=5.0) == "idle",
            f"node {self.node_name} to be idle",
            deadline,
        )

    def _daemon_env(self) -> dict[str, str]:
        # A minimal environment: the caller's venv, SLURM_* or proxy variables must not leak into the daemons.
        # SLURM_CONF here is also how `procs.sweep_orphans` recognises this cluster's slurmstepd processes.
        return {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "HOME": os.environ.get("HOME", "/root"),
            "SLURM_CONF": str(self.slurm_conf),
        }

    def _launch(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        ready: Callable[[], bool],
        what: str,
        deadline: Deadline,
    ) -> None:
        pid = procs.spawn(self.layout, name, argv, env)

        def check_alive() -> None:
            if not procs.is_alive(pid, name):
                code = procs.exit_code(pid)
                raise ClusterError(f"{name} exited during start (status {code}); {self._log_hint(name)}")

        wait_until(
            ready,
            what=f"{what} ({self._log_hint(name)})",
            timeout=max(1.0, deadline.remaining()),
            check_alive=check_alive,
        )

    def _log_hint(self, name: str) -> str:
        for path in (self.layout.log(name), self.layout.console(name)):
            try:
                lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
            except OSError:
                continue
            if lines:
                return f"last log line: {lines[-1].strip()[:200]!r} in {path}"
        return f"no log yet in {self.layout.log(name)}"

    # -- down ------------------------------------------------------------------------------------------------

    def down(self) -> None:
        """Cancel every job, wait for the queue to drain, stop the daemons. A no-op when nothing runs."""
        self.warnings = []
        if not self.layout.root.is_dir():
            return
        with self._locked():
            if any(self._alive_pids().values()):
                self._stop()
            else:
                self._sweep()

    def _stop(self) -> None:
        conf = self.slurm_conf
        pids = self._alive_pids()
        # Jobs first: stopping slurmd under running jobs leaves slurmstepd processes retrying forever. Without a
        # live slurmctld and slurmd a cancel cannot complete, so there is nothing to wait for; the sweep below
        # kills whatever such a crash left.
        if pids["slurmctld"] and pids["slurmd"] and conf.exists():
            client.cancel_all(conf)
            try:
                wait_until(lambda: not client.job_ids(conf), what="the queue to drain", timeout=DRAIN_TIMEOUT_S)
            except ClusterError as error:
                self.warnings.append(f"{error}; stopping daemons anyway")
        stopped = [procs.stop(self.layout, name, grace=DAEMON_STOP_GRACE_S) for name in reversed(DAEMONS)]
        self._sweep()
        procs.wait_reaped([pid for pid in stopped if pid is not None], timeout=5.0)

    def _sweep(self) -> None:
        killed = procs.sweep_orphans(self.slurm_conf)
        if killed:
            self.warnings.append(f"killed orphaned slurmstepd processes: {killed}")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # Serialises up/down on one state dir across processes (e.g. two terminals, or CLI and tests).
        self.layout.root.mkdir(parents=True, exist_ok=True)
        with open(self.layout.lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
