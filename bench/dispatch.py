"""Dispatch cost of a 100-member SLURM sweep on the development cluster.

Prints one table: wall time of `orchestra sweep ... launcher=slurm -m` for N members (expand, compose and validate
every member, write job dirs and the manifest, ONE sbatch), of one `orchestra status` over them (one sacct call,
no torch import), and the scheduler's submit-to-start latency of the first array tasks (from sacct).
Members are cancelled as soon as they are measured; nothing trains to the end.

    python bench/dispatch.py [--members 100]     # starts and stops its own cluster (root, packages installed)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from launch.cluster import DevCluster

ORCHESTRA = [sys.executable, "-m", "orchestra.cli"]


def _timed(args: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run([*ORCHESTRA, *args], cwd=cwd, capture_output=True, text=True, env=os.environ.copy())
    if done.returncode != 0:
        raise SystemExit(f"orchestra {' '.join(args[:2])} failed: {done.stderr.strip()}")
    return time.perf_counter() - started, done


def _start_latency(array_id: str, tasks: int, timeout: float = 60) -> list[float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["sacct", "-n", "-P", "-X", "--format=JobID,Submit,Start", "-j", array_id],
                             capture_output=True, text=True).stdout
        rows = [line.split("|") for line in out.splitlines() if "|" in line]
        started = [r for r in rows if r[2] not in ("Unknown", "None", "")]
        if len(started) >= tasks:
            return [(datetime.fromisoformat(r[2]) - datetime.fromisoformat(r[1])).total_seconds() for r in started]
        time.sleep(1)
    return []


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="odb-", dir="/tmp") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # munged runs as the munge user and must traverse into the cluster's state dir
        cluster = DevCluster(root / "c")
        cluster.up(timeout=120)
        os.environ.update(cluster.env())
        try:
            sweep_s, _ = _timed(["sweep", "method=simclr", f"seed=range(0,{args.members})", "-m", "launcher=slurm",
                                 "launcher.partition=debug", "launcher.cpus_per_task=1", "logger=none",
                                 f"output_root={root}"], root)
            (sweep_dir,) = list((root / "sweeps").iterdir())
            status_s = min(_timed(["status", str(sweep_dir)], root)[0] for _ in range(3))
            array_id = subprocess.run(["squeue", "-h", "-o", "%F", "--me"], capture_output=True,
                                      text=True).stdout.split()[0]
            latencies = _start_latency(array_id, tasks=4)
            _timed(["cancel", str(sweep_dir)], root)
        finally:
            cluster.down()
    latency = f"{statistics.median(latencies):.1f} s (median of {len(latencies)})" if latencies else "n/a"
    print(f"| what | {args.members} members |\n|---|---|")
    print(f"| `orchestra sweep ... launcher=slurm -m` (expand, validate, write, 1 sbatch) | {sweep_s:.2f} s |")
    print(f"| `orchestra status` (1 sacct call, whole process, best of 3) | {status_s:.2f} s |")
    print(f"| submit-to-start latency of the first array tasks | {latency} |")


if __name__ == "__main__":
    main()
