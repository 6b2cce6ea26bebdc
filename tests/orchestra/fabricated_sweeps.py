"""Sweeps written by hand with launch.manifest, members in any state and results files with any content: for the
readers (status, report, resume, cancel, eval), no training needed.

Members are local ones whose process is gone (job id ``local:999999999`` cannot be a live pid), so their state is
what the manifest and their results files say.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from launch import manifest

DEAD_LOCAL_JOB = "local:999999999"


def results_of(state: str, knn: float = 0.5, **extra: Any) -> dict[str, Any]:
    """A results file as a job body writes it; numbers only when the member completed."""
    results: dict[str, Any] = {"state": state, "attempts": 1, "method": "simclr", "wall_time_s": 12.0,
                               "device_hours": 0.0033, "peak_memory_mb": 100.0,
                               "history": [{"epoch": 0, "step": 10, "metrics": {"knn/top1": knn}}]}
    if state == "COMPLETED":
        results["metrics"] = {"knn/top1": knn, "probe/top1": knn + 0.1}
    return {**results, **extra}


def make_sweep(root: Path, members: list[tuple[list[str], str, dict[str, Any] | None]],
               swept_keys: list[str] | None = None, job_ids: list[str] | None = None) -> Path:
    """A sweep directory under ``root``: one (overrides, manifest state, results or None) per member, each with a
    job dir holding config.yaml and, unless None, results.json."""
    sweep_dir = root / "sweeps" / "2024-01-01_00-00-00"
    entries = []
    for index, (overrides, state, results) in enumerate(members):
        job_dir = sweep_dir / f"{index:03d}"
        job_dir.mkdir(parents=True)
        (job_dir / "config.yaml").write_text("seed: 0\n")
        if results is not None:
            (job_dir / "results.json").write_text(json.dumps(results))
        entries.append(manifest.Member(index=index, overrides=overrides, job_dir=str(job_dir), state=state,
                                       attempts=1, job_ids=list(job_ids or [DEAD_LOCAL_JOB]),
                                       finished_at=manifest.now()))
    keys = swept_keys or sorted({o.split("=", 1)[0] for m in members for o in m[0]})
    manifest.create(manifest.Sweep(sweep_dir=str(sweep_dir), command=["sweep", "-m"], launcher="local",
                                   created_at=manifest.now(), members=entries, swept_keys=keys,
                                   launcher_settings={"name": "local"}))
    return sweep_dir


def three_completed(root: Path) -> Path:
    """simclr seeds 0 and 1 and byol seed 0, all COMPLETED (kNN 0.5, 0.7, 0.6)."""
    return make_sweep(root, [(["method=simclr", "seed=0"], "COMPLETED", results_of("COMPLETED", 0.5)),
                             (["method=simclr", "seed=1"], "COMPLETED", results_of("COMPLETED", 0.7)),
                             (["method=byol", "seed=0"], "COMPLETED", results_of("COMPLETED", 0.6))])
