"""What orchestra costs over plain PyTorch per training step, and over bare Lightning at start-up.

    .venv/bin/python bench/overhead.py [--repeats 5] [--steps 30] [--cases tiny,resnet18] [--markdown]

Both sides train the same SimCLR model (deep copies of one initialisation) on the same in-memory random batches, so
data loading is not measured. Only ratios mean much: this machine drifts by about 15 % between repeats, so each
repeat runs orchestra and the hand loop back to back (alternating which goes first) and we report the median of
the per-repeat ratios; the absolute milliseconds are medians over repeats and only indicative.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

import method_zoo
from orchestra import Module
from orchestra.model.backbones import SmallCNN, from_torchvision

ROOT = Path(__file__).resolve().parent.parent
WARMUP = 2  # the first step times carry lazy initialisation and allocator growth on both sides
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
OPTIM = {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "warmup_epochs": 0}
Parts = tuple[nn.Module, nn.Module]  # backbone, projector
Batch = dict[str, torch.Tensor]


# case -> (backbone and projector factory, image shape [C, H, W], images N per batch; a batch holds 2N views)
CASES: dict[str, tuple[Callable[[], Parts], tuple[int, int, int], int]] = {
    "tiny": (lambda: (SmallCNN(in_channels=1, widths=(32, 64), strides=(2, 2), pool=7),
                      nn.Sequential(nn.Linear(3136, 512), nn.ReLU(), nn.Linear(512, 128))), (1, 28, 28), 256),
    "resnet18": (lambda: (from_torchvision("resnet18", low_resolution=True),
                          nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 128))), (3, 32, 32), 64),
}


def make_batches(shape: tuple[int, int, int], n: int, count: int) -> list[Batch]:
    """The data modules' train contract: views of image i are rows i and N + i, named by ``sample_idx``."""
    gen = torch.Generator().manual_seed(0)
    return [{"image": torch.randn(2 * n, *shape, generator=gen), "sample_idx": torch.arange(n).repeat(2),
             "label": torch.randint(0, 10, (n,), generator=gen).repeat(2)} for _ in range(count)]


def step_times(stamps: list[float]) -> list[float]:
    """Diffs of end-of-step stamps: everything between two steps (loop bookkeeping included) counts."""
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)][WARMUP:]


class StepClock(pl.Callback):
    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.first_loss = float("nan")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if batch_idx == 0:  # compared with the hand loop's first loss: proves both compute the same thing
            self.first_loss = float(outputs["loss"])
        self.stamps.append(time.perf_counter())


def run_orchestra(parts: Parts, batches: list[Batch]) -> tuple[float, float]:
    backbone, projector = copy.deepcopy(parts)
    module = Module(forward=method_zoo.simclr_forward, backbone=backbone, projector=projector,
                    simclr_loss=method_zoo.NTXEntLoss(0.5), optim=OPTIM)
    clock = StepClock()
    trainer = pl.Trainer(accelerator="cpu", max_steps=len(batches), logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, callbacks=[clock])
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))  # type: ignore[arg-type]
    return statistics.median(step_times(clock.stamps)), clock.first_loss


def run_hand(parts: Parts, batches: list[Batch]) -> tuple[float, float]:
    backbone, projector = copy.deepcopy(parts)
    model = nn.Sequential(backbone, projector).train()
    loss_fn = method_zoo.NTXEntLoss(0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    stamps, first_loss = [], float("nan")
    for i, batch in enumerate(batches):
        # sample_idx is arange(N).repeat(2), so the two views are simply the two halves of the batch.
        z_a, z_b = model(batch["image"]).chunk(2)
        loss = loss_fn(z_a, z_b)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if i == 0:
            first_loss = float(loss)
        stamps.append(time.perf_counter())
    return statistics.median(step_times(stamps)), first_loss


def bench_case(name: str, repeats: int, steps: int) -> list[str]:
    factory, shape, n = CASES[name]
    torch.manual_seed(0)
    parts, batches = factory(), make_batches(shape, n, steps)
    runners = (run_orchestra, run_hand)
    orchestra_ms, hand_ms, ratios = [], [], []
    for r in range(repeats):
        result = {}
        for runner in runners if r % 2 == 0 else runners[::-1]:  # alternate so neither side always runs warm
            torch.set_num_threads(CORES)  # the same thread count for both, whatever the previous run left
            result[runner] = runner(parts, batches)
        (orch, orch_loss), (hand, hand_loss) = result[run_orchestra], result[run_hand]
        if abs(orch_loss - hand_loss) > 1e-3 * max(1.0, abs(hand_loss)):
            print(f"warning: {name}: first-step losses differ (orchestra {orch_loss:.5f}, hand {hand_loss:.5f})",
                  file=sys.stderr)
        orchestra_ms.append(orch * 1e3)
        hand_ms.append(hand * 1e3)
        ratios.append(orch / hand)
    return [name, f"{statistics.median(orchestra_ms):.1f}", f"{statistics.median(hand_ms):.1f}",
            f"{statistics.median(ratios):.3f}", f"{min(ratios):.3f}–{max(ratios):.3f}"]


BARE_LIGHTNING = """
import lightning.pytorch as pl, torch
from torch import nn
class Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(32, 1)
    def training_step(self, batch, batch_idx):
        return self.net(batch[0]).pow(2).mean()
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)
data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 32)), batch_size=32)
pl.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
           enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0).fit(Tiny(), data)
"""


def wall_clock(command: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-3000:]}")
    return elapsed


def startup_rows(runs: int) -> list[list[str]]:
    entry_point = Path(sys.executable).parent / "orchestra"  # what users type; -m is the same code path
    orchestra = [str(entry_point)] if entry_point.exists() else [sys.executable, "-m", "orchestra.cli"]
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "bare_lightning.py"
        script.write_text(BARE_LIGHTNING)
        train = [*orchestra, "train", "trainer.max_epochs=1", "+trainer.max_steps=1", "trainer.limit_val_batches=0",
                 "logger=none", f"output_root={tmp}"]
        warm_cache = f"ORCHESTRA_CACHE_DIR={tmp}/warm"
        commands = {
            "(1) python -c 'import lightning.pytorch'": lambda run: [sys.executable, "-c", "import lightning.pytorch"],
            "(2) bare Lightning, 1 step": lambda run: [sys.executable, str(script)],
            # A fresh cache per run: the no-training floors are computed (a new configuration's first run).
            "(3) orchestra train, 1 step": lambda run: ["env", f"ORCHESTRA_CACHE_DIR={tmp}/cold-{run}", *train],
            # The floors read back (a rerun, or a sweep member whose data and initial weights were seen before).
            "(3w) orchestra train, 1 step, floors cached": lambda run: ["env", warm_cache, *train],
            "(4) orchestra --help": lambda run: [*orchestra, "--help"],
        }
        wall_clock(["env", warm_cache, *train])  # fills the warm cache, not timed
        times: dict[str, list[float]] = {label: [] for label in commands}
        for run in range(runs):  # round-robin, so drift hits every command alike
            for label, command in commands.items():
                times[label].append(wall_clock(command(run)))
    bare = statistics.median(times["(2) bare Lightning, 1 step"])
    return [[label, f"{statistics.median(t):.2f}", f"{min(t):.2f}–{max(t):.2f}", f"{statistics.median(t) / bare:.2f}"]
            for label, t in times.items()]


def cpu_name() -> str:
    """platform.processor() is empty on Linux; /proc/cpuinfo names the model."""
    info = Path("/proc/cpuinfo")
    models = [ln.split(":", 1)[1].strip() for ln in info.read_text().splitlines()
              if ln.startswith("model name")] if info.exists() else []
    return models[0] if models else platform.processor() or platform.machine()


def show(title: str, headers: list[str], rows: list[list[str]], markdown: bool) -> None:
    if markdown:
        print(f"\n**{title}**\n\n| " + " | ".join(headers) + " |\n|" + "|".join(["---"] + ["---:"] * (len(headers) - 1))
              + "|\n" + "\n".join("| " + " | ".join(row) + " |" for row in rows))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30, help=f"steps per run; the first {WARMUP} are dropped")
    parser.add_argument("--cases", default="tiny,resnet18", help=f"comma list of: {', '.join(CASES)}")
    parser.add_argument("--startup-runs", type=int, default=3, help="processes per start-up command; 0 skips")
    parser.add_argument("--markdown", action="store_true", help="Markdown tables, for BENCHMARKS.md")
    args = parser.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    if unknown := set(cases) - set(CASES):
        parser.error(f"unknown case(s) {', '.join(sorted(unknown))}; known: {', '.join(CASES)}")
    if args.steps < WARMUP + 2 or args.repeats < 1:
        parser.error(f"need --steps >= {WARMUP + 2} and --repeats >= 1")
    # Lightning's banners and tips (no GPU, few workers, log interval) say nothing about speed and bury the table.
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    print(f"torch {torch.__version__}, lightning {pl.__version__}, {CORES} threads, {cpu_name()}, "
          f"{args.repeats} repeats x {args.steps} steps (first {WARMUP} dropped)")
    if cases:
        rows = [bench_case(name, args.repeats, args.steps) for name in cases]
        show("Training step: orchestra vs hand-written loop", ["case", "orchestra ms/step", "hand ms/step",
             "ratio (median)", "ratio min–max"], rows, args.markdown)
    if args.startup_runs > 0:
        show(f"Start-up, whole processes (median of {args.startup_runs})",
             ["process", "wall s", "min–max s", "÷ (2)"], startup_rows(args.startup_runs), args.markdown)


if __name__ == "__main__":
    main()
