"""Finding a development cluster from the outside: which state dir a slurm.conf belongs to, whether one runs.

Cheap enough for an error path: reads files and /proc, runs no SLURM command. Used by ``launch.slurm`` to say which
``export SLURM_CONF=...`` is missing, and to size members on this machine's CPUs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from launch.cluster.dev_cluster import DevCluster
from launch.cluster.layout import DEFAULT_STATE_DIR, Layout


def state_dir_of(slurm_conf: str | os.PathLike[str] | None) -> Path | None:
    """The development cluster's state dir when ``slurm_conf`` is a slurm.conf that ``orchestra cluster up`` wrote
    (its StateSaveLocation is the ``state`` folder beside it), else None: a real cluster's, or no file at all."""
    if not slurm_conf:
        return None
    conf = Path(slurm_conf).absolute()
    try:
        lines = conf.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    return conf.parent if f"StateSaveLocation={Layout(conf.parent).statesave}" in lines else None


def running_cluster(state_dirs: Iterable[str | os.PathLike[str]] = (DEFAULT_STATE_DIR,)) -> DevCluster | None:
    """The first of these state dirs whose cluster has every daemon running, or None."""
    for state_dir in state_dirs:
        if Path(state_dir, "slurm.conf").is_file():
            cluster = DevCluster(state_dir)
            if cluster.is_running():
                return cluster
    return None


def no_controller_hint(state_dirs: Iterable[str | os.PathLike[str]] = (DEFAULT_STATE_DIR,),
                       slurm_conf: str | None = None) -> str | None:
    """What to do when no SLURM controller answers, as far as development clusters tell; None when they don't.

    ``slurm_conf`` is the client's SLURM_CONF (None: unset). A dev cluster it points at is looked at first.
    """
    own = state_dir_of(slurm_conf)
    candidates = [own] if own else []
    candidates += [Path(d).absolute() for d in state_dirs if Path(d).absolute() != own]
    cluster = running_cluster(candidates)
    if cluster is None:
        if own is not None:
            option = "" if own == DEFAULT_STATE_DIR else f" --dir {own}"
            return (f"SLURM_CONF points at the development cluster in {own}, which is not running: "
                    f"orchestra cluster up{option}")
        return None
    if slurm_conf and Path(slurm_conf).absolute() == cluster.slurm_conf:
        return (f"the development cluster in {cluster.layout.root} is running but its controller does not answer; "
                f"see orchestra cluster status and {cluster.layout.log('slurmctld')}")
    return f"a development cluster is running here: export SLURM_CONF={cluster.slurm_conf}"
