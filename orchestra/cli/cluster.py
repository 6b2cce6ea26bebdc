"""``orchestra cluster up|down|status``: the single-node development SLURM cluster (``launch.cluster``)."""

from __future__ import annotations

from launch.cluster.layout import DEFAULT_STATE_DIR

USAGE = f"""usage: orchestra cluster up|down|status [--dir DIR] [--timeout SECONDS]

A real single-node SLURM cluster (munged, MariaDB, slurmdbd, slurmctld, slurmd) on this machine, for development
and tests; needs root and the packages of launch/cluster/install.sh. Every file lives in one state directory.

actions:
  up               start every daemon (a no-op when running) and print the `export SLURM_CONF=...` line to run
  down             cancel every job, then stop the daemons
  status           which daemons run, the node's state and the export line; exit status 1 unless all run
options:
  --dir DIR        state directory (default {DEFAULT_STATE_DIR})
  --timeout S      seconds `up` may take (default 60)
  -h, --help       this help

then: launcher=slurm launcher.partition=debug on orchestra sweep; launcher.cpus_per_task=auto (the default) sizes
members from this machine's CPUs.
"""


def run(args: list[str]) -> int:
    from launch.cluster.cli import main as cluster_main

    return cluster_main(args)
