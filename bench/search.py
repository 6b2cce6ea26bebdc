"""What pruning buys a search: SimCLR lr x NT-Xent temperature on the shipped digits (mnist10k), three ways.

    .venv/bin/python bench/search.py [--trials 16] [--epochs 4] [--train-limit 4000] [--parallel 2] [--out DIR]

1. ``search=optuna`` with the median pruner (its defaults: 2 startup trials, no warm-up), TPE seed 0;
2. the same search with ``search.pruner.name=none`` (same sampler and seed: TPE's first 10 trials are its random
   start-up draws and are the same in both; later draws depend on the study's history, so they may differ);
3. a plain grid sweep of the same size over the same ranges (sqrt(trials) values per parameter, log-spaced for lr,
   the centres of equal bins).

Each runs as ``orchestra sweep ... -m`` in a subprocess, with ``search.parallel`` (grid: ``launcher.parallelism``)
members at once, and is read back from its sweep directory with the report's own readers. It prints a table (best
probe top-1 at the last validation, device-hours, wall time, pruned trials) and the ratios. Not a test.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ORCHESTRA = REPO / ".venv" / "bin" / "orchestra"
LR, TEMP = "optim.lr", "module.simclr_loss.temperature"
LR_RANGE, TEMP_RANGE = (1e-4, 3e-2), (0.05, 1.0)


def grid_values(low: float, high: float, n: int, log: bool) -> list[float]:
    """Centres of ``n`` equal bins of [low, high] (on a log scale when ``log``), rounded to 2 significant digits."""
    if log:
        a, b = math.log10(low), math.log10(high)
        return [float(f"{10 ** (a + (i + 0.5) * (b - a) / n):.2g}") for i in range(n)]
    return [float(f"{low + (i + 0.5) * (high - low) / n:.2g}") for i in range(n)]


def run(name: str, overrides: list[str], out: Path) -> tuple[Path, float]:
    """Run one sweep to its end; (its sweep directory, wall seconds of the whole command)."""
    root = out / name
    root.mkdir(parents=True, exist_ok=True)
    command = [str(ORCHESTRA), "sweep", *overrides, f"output_root={root}", "-m"]
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    with open(root / "command.log", "w") as log:
        code = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    if code != 0:
        sys.exit(f"{name}: exit {code}; see {root / 'command.log'}")
    (sweep_dir,) = sorted((root / "sweeps").iterdir())
    print(f"[{time.strftime('%H:%M:%S')}] {name}: done in {wall:.0f} s ({sweep_dir})", flush=True)
    return sweep_dir, wall


def epochs_trained(job_dirs: list[Path]) -> int:
    """Epochs the members trained, from their results' histories (one validation per epoch): a measure of the
    work done that, unlike device-hours, does not move with the machine's load."""
    import json

    total = 0
    for job_dir in job_dirs:
        try:
            history = json.loads((job_dir / "results.json").read_text()).get("history") or []
        except (OSError, ValueError):
            continue
        total += max((int(h["epoch"]) + 1 for h in history), default=0)
    return total


def read_search(sweep_dir: Path) -> dict:
    from orchestra.reporting.search_summary import build_search

    report = build_search(sweep_dir)
    best = report.best
    return {"members": len(report.rows.trials), "pruned": report.saving.pruned,
            "best": best.objective if best else None,
            "params": {k: v for k, v in best.params.items()} if best else {},
            "device_hours": report.total_device_hours, "saved": report.saving.device_hours,
            "epochs": epochs_trained([t.job_dir for t in report.rows.trials]),
            "states": report.states, "trials": {t.number: t.params for t in report.rows.trials}}


def read_grid(sweep_dir: Path) -> dict:
    from orchestra.reporting.summary import build

    report = build(sweep_dir)
    done = [m for m in report.rows.members if m.probe_top1 is not None]
    best = max(done, key=lambda m: m.probe_top1) if done else None
    return {"members": len(report.rows.members), "pruned": 0, "best": best.probe_top1 if best else None,
            "params": {k: float(v) for k, v in best.params.items()} if best else {},
            "device_hours": report.total_device_hours, "saved": 0.0, "states": report.states,
            "epochs": epochs_trained([m.job_dir for m in report.rows.members])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-limit", type=int, default=4000)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/orchestra-bench-search"))
    parser.add_argument("--only", choices=("pruned", "unpruned", "grid"), action="append")
    args = parser.parse_args()
    side = round(math.sqrt(args.trials))
    common = ["method=simclr", f"trainer.max_epochs={args.epochs}", f"data.train_limit={args.train_limit}",
              "logger=none"]
    search = [*common, f"{LR}=tag(log, interval({LR_RANGE[0]}, {LR_RANGE[1]}))",
              f"{TEMP}=interval({TEMP_RANGE[0]}, {TEMP_RANGE[1]})", "search=optuna", f"search.trials={args.trials}",
              f"search.parallel={args.parallel}", "search.seed=0", "search.sampler=tpe"]
    grid = [*common, f"{LR}=" + ",".join(map(str, grid_values(*LR_RANGE, side, log=True))),
            f"{TEMP}=" + ",".join(map(str, grid_values(*TEMP_RANGE, side, log=False))),
            f"launcher.parallelism={args.parallel}"]
    plans = {"pruned": (search + ["search.pruner.name=median"], read_search),
             "unpruned": (search + ["search.pruner.name=none"], read_search),
             "grid": (grid, read_grid)}
    print(f"settings: {args.trials} trials, {args.epochs} epochs, data.train_limit={args.train_limit}, "
          f"{args.parallel} at once; grid {side}x{side}: {grid[-3]} {grid[-2]}", flush=True)
    rows = {}
    for name in args.only or list(plans):
        overrides, read = plans[name]
        sweep_dir, wall = run(name, overrides, args.out)
        rows[name] = {**read(sweep_dir), "wall_s": wall, "sweep_dir": sweep_dir}

    print("\n| run | members | pruned | best probe top-1 | best lr | best temperature | epochs trained | "
          "device-hours | saved by pruning (report's estimate) | wall |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        best = "—" if r["best"] is None else f"{r['best']:.4f}"
        print(f"| {name} | {r['members']} | {r['pruned']} | {best} | {r['params'].get(LR, '—'):.3g} | "
              f"{r['params'].get(TEMP, '—'):.3g} | {r['epochs']} | {r['device_hours']:.4f} | {r['saved']:.4f} | "
              f"{r['wall_s'] / 60:.1f} min |")
    if "pruned" in rows and "unpruned" in rows:
        p, u = rows["pruned"], rows["unpruned"]
        print(f"\npruned / unpruned epochs trained: {p['epochs'] / u['epochs']:.2f}")
        print(f"pruned / unpruned device-hours: {p['device_hours'] / u['device_hours']:.2f}; best probe top-1 "
              f"difference (pruned - unpruned): {p['best'] - u['best']:+.4f}")
        same = [n for n in p["trials"] if p["trials"].get(n) == u["trials"].get(n)]
        print(f"trials drawn with the same parameters in both: {len(same)} of {len(p['trials'])} ({same})")
    if "grid" in rows:
        for name in ("pruned", "unpruned"):
            if name in rows:
                r, g = rows[name], rows["grid"]
                print(f"{name} search / grid: device-hours {r['device_hours'] / g['device_hours']:.2f}, best probe "
                      f"top-1 difference {r['best'] - g['best']:+.4f}")
    for name, r in rows.items():
        print(f"{name}: {r['sweep_dir']} states {r['states']}")


if __name__ == "__main__":
    main()
