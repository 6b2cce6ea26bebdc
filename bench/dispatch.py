"""Dispatch cost of a 100-member SLURM sweep on the development cluster.

Prints one table: wall time of `orchestra sweep ... launcher=slurm -m` for N members (expand, compose and validate
every member, write job dirs and the manifest, ONE sbatch), of one `orchestra status` over them (one sacct call,
no torch import), and the scheduler's submit-to-start latency of the first array tasks (from sacct).
Members are cancelled as soon as they are measured; nothing trains to the end.

In the same run, the same N members go through hydra-submitit-launcher (bench/hydra_app.py, a Hydra app that does
nothing). That launcher blocks until every member has ended, so its submit time is measured from process start until
all N array tasks are known to SLURM (polling `squeue -r` and `sacct` every 50 ms; a task that already ran is still
counted); ours is the whole `orchestra sweep` process, which returns once its one sbatch call has been made.

    pip install -e '.[bench]'                    # hydra-submitit-launcher
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
HYDRA_APP = Path(__file__).resolve().parent / "hydra_app.py"
HYDRA_WAIT_S = 180  # how long the blocking Hydra process may run before it is stopped


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


def _known_tasks(job_name: str) -> set[str]:
    """Array task ids SLURM knows for ``job_name``: queued or running (squeue -r) and finished (sacct)."""
    queued = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-n", job_name], capture_output=True, text=True).stdout
    done = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID", "--name", job_name], capture_output=True,
                          text=True).stdout
    tasks = set(queued.split())
    for job_id in done.split():
        array, _, index = job_id.partition("_")
        if index.startswith("["):  # sacct folds pending tasks: 12_[3-99%256]
            for part in index.strip("[]").split("%")[0].split(","):
                low, _, high = part.partition("-")
                tasks.update(f"{array}_{i}" for i in range(int(low), int(high or low) + 1))
        elif index:
            tasks.add(job_id)
    return tasks


def _hydra_submitit(members: int, root: Path) -> tuple[float, float | None]:
    """(seconds until all members were queued, seconds until the blocking process returned or None if stopped)."""
    job_name = "hydra_app"
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(HYDRA_APP), "-m", f"seed=range(0,{members})",
                                "hydra/launcher=submitit_slurm", "hydra.launcher.partition=debug",
                                "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10",
                                f"hydra.launcher.name={job_name}", f"hydra.sweep.dir={root / 'hydra'}"],
                               cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    queued_s = None
    while queued_s is None and process.poll() is None:
        if len(_known_tasks(job_name)) >= members:
            queued_s = time.perf_counter() - started
        time.sleep(0.05)
    try:
        process.wait(timeout=max(1.0, HYDRA_WAIT_S - (time.perf_counter() - started)))
        returned_s = time.perf_counter() - started
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        returned_s = None
    subprocess.run(["scancel", "-n", job_name], check=False)
    if queued_s is None:
        raise SystemExit(f"hydra-submitit-launcher never queued {members} tasks: {process.stderr.read()[-2000:]}")
    return queued_s, returned_s


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
            hydra_queued_s, hydra_returned_s = _hydra_submitit(args.members, root)
        finally:
            cluster.down()
    latency = f"{statistics.median(latencies):.1f} s (median of {len(latencies)})" if latencies else "n/a"
    returned = f"{hydra_returned_s:.1f} s" if hydra_returned_s is not None else f"still blocked at {HYDRA_WAIT_S} s"
    print(f"| what ({args.members} members) | orchestra | hydra-submitit-launcher 1.2.0 | ratio (hydra / ours) |")
    print("|---|---|---|---|")
    print(f"| expand, validate, write, submit (process start -> all queued; 1 sbatch) | {sweep_s:.2f} s "
          f"| {hydra_queued_s:.2f} s | {hydra_queued_s / sweep_s:.1f}x |")
    print(f"| command returns to the shell | {sweep_s:.2f} s (non-blocking) | {returned} (blocks until all end) "
          f"| {'' if hydra_returned_s is None else f'{hydra_returned_s / sweep_s:.0f}x'} |")
    print(f"| `orchestra status` (1 sacct call, whole process, best of 3) | {status_s:.2f} s | no status command | |")
    print(f"| submit-to-start latency of the first array tasks | {latency} | | |")

if __name__ == "__main__":
    main()
