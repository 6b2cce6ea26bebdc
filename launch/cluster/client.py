"""The SLURM client commands the cluster manager itself needs (sinfo, squeue, scancel, sacctmgr).

Each call points at this cluster through SLURM_CONF and has a timeout: a client talking to a dead controller
retries for a long time, and `status`/`down` must answer promptly.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from launch.cluster.errors import ClusterError
from launch.cluster.host import find_binary


def run(conf: Path, argv: list[str], timeout: float = 15.0) -> subprocess.CompletedProcess[str] | None:
    """Run a client; None when it timed out."""
    env = {**os.environ, "SLURM_CONF": str(conf)}
    try:
        return subprocess.run(
            [find_binary(argv[0]), *argv[1:]], capture_output=True, text=True, env=env, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return None


def node_state(conf: Path, timeout: float = 10.0) -> str | None:
    """The node's short state (`idle`, `mix`, `alloc`, `down*`, ...), or None if the controller does not answer."""
    done = run(conf, ["sinfo", "-h", "-o", "%t"], timeout=timeout)
    if done is None or done.returncode != 0:
        return None
    states = done.stdout.split()
    return states[0] if states else None


def job_ids(conf: Path) -> list[str] | None:
    """Ids of jobs still known to the controller in any active state; None if it does not answer."""
    done = run(conf, ["squeue", "-h", "-o", "%A"])
    if done is None or done.returncode != 0:
        return None
    return done.stdout.split()


def cancel_all(conf: Path) -> None:
    ids = job_ids(conf)
    if ids:
        run(conf, ["scancel", *ids])


def ensure_cluster_registered(conf: Path, cluster_name: str) -> None:
    """Add the cluster to the accounting database once, so sacct has somewhere to find its jobs."""
    listed = run(conf, ["sacctmgr", "-n", "-P", "list", "cluster", "format=cluster"])
    if listed is None or listed.returncode != 0:
        detail = "timed out" if listed is None else listed.stderr.strip()
        raise ClusterError(f"sacctmgr cannot reach slurmdbd: {detail}")
    if cluster_name in listed.stdout.split():
        return
    added = run(conf, ["sacctmgr", "-i", "add", "cluster", cluster_name])
    if added is None or added.returncode != 0:
        detail = "timed out" if added is None else (added.stderr or added.stdout).strip()
        raise ClusterError(f"sacctmgr could not register cluster {cluster_name}: {detail}")
