"""`up | down | status [--dir DIR]` for the development cluster; one printed line per fact.

Exit status: 0 on success (for `status`: every daemon running), 1 otherwise. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time

from launch.cluster.config import PARTITION
from launch.cluster.dev_cluster import DevCluster
from launch.cluster.errors import ClusterError
from launch.cluster.layout import DEFAULT_STATE_DIR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestra cluster", description="single-node development SLURM cluster")
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument("--dir", default=str(DEFAULT_STATE_DIR), help=f"state directory (default {DEFAULT_STATE_DIR})")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds `up` may take (default 60)")
    return parser


def _print_status(cluster: DevCluster) -> bool:
    facts = cluster.status()
    for name, pid in facts["daemons"].items():
        print(f"{name}: running (pid {pid})" if pid else f"{name}: stopped")
    print(f"node {facts['node']}: {facts['node_state'] or 'unknown'}")
    print(f"partition: {PARTITION}")
    print(f"state dir: {facts['state_dir']}")
    print(f"export SLURM_CONF={facts['slurm_conf']}")
    return bool(facts["running"])


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        cluster = DevCluster(args.dir)
        if args.action == "up":
            was_running = cluster.status()["running"]
            started = time.monotonic()
            cluster.up(timeout=args.timeout)
            took = time.monotonic() - started
            for warning in cluster.warnings:
                print(f"warning: {warning}", file=sys.stderr)
            print("cluster already running" if was_running else f"cluster up in {took:.1f}s")
            return 0 if _print_status(cluster) else 1
        if args.action == "down":
            was_running = any(cluster.status()["daemons"].values())
            started = time.monotonic()
            cluster.down()
            for warning in cluster.warnings:
                print(f"warning: {warning}", file=sys.stderr)
            took = time.monotonic() - started
            print(f"cluster down in {took:.1f}s" if was_running else "cluster already down")
            return 0
        return 0 if _print_status(cluster) else 1
    except ClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
