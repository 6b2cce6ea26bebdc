"""DevCluster: a real single-node SLURM cluster (munged, MariaDB, slurmdbd, slurmctld, slurmd) in one state dir.

For development and tests on one machine, as root. Daemons talk over 127.0.0.1 (MariaDB and slurmctld bind only
there); clients find the cluster through SLURM_CONF (see `env()`), so nothing is written to /etc and a system
SLURM, if any, is untouched. This file holds the lifecycle (status, idempotent up/down, locking); the start
sequence itself is in `start.py`.
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from launch.cluster import client, procs
from launch.cluster.errors import ClusterError
from launch.cluster.host import check_binaries, cpu_count, short_hostname
from launch.cluster.layout import DEFAULT_STATE_DIR, Layout
from launch.cluster.start import start_all
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

    def is_running(self) -> bool:
        """Every daemon alive, by its PID file and process name; asks no daemon anything."""
        return all(self._alive_pids().values())

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
                start_all(
                    self.layout,
                    cluster_name=self.cluster_name,
                    node_name=self.node_name,
                    node_cpus=self.node_cpus,
                    deadline=deadline,
                )
            except ClusterError:
                self._stop()
                raise
            except Exception as error:
                self._stop()
                raise ClusterError(f"cluster start failed: {type(error).__name__}: {error}") from error
            except BaseException:  # Ctrl-C mid-start: leave no half-started daemons behind
                self._stop()
                raise

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
        self._sweep(already_stopped=[pid for pid in stopped if pid is not None])

    def _sweep(self, already_stopped: list[int] | None = None) -> None:
        killed = procs.sweep_orphans(self.slurm_conf)
        if killed:
            self.warnings.append(f"killed orphaned slurmstepd and job processes: {killed}")
        procs.wait_reaped([*(already_stopped or []), *killed], timeout=5.0)

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
