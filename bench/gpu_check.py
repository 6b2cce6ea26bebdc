"""The GPU check of issue 5: training throughput against a hand-written loop, and one smoke member per strategy.

    bash bench/gpu_check.sh            # what to run on a GPU machine; it calls this file

Throughput: SimCLR on synthetic images, bf16-mixed autocast and channels_last on both sides. Both sides train deep
copies of one initialisation on the same device-resident batches, so data loading is excluded from both; orchestra
runs its real Module under a Trainer with the callbacks and checkpoint plugin the job body installs (no probe and no
validation, since the hand loop has neither). Each repeat times both back to back, alternating which goes first;
the ratio is the median of the per-repeat ratios.

Smoke members: ``strategy=ddp|fsdp|deepspeed`` on one GPU through the real job body (``python -m orchestra.job``):
10 steps, then the same job directory again with a second epoch, which must resume from ``last.ckpt`` and end at
step 20 with both validations in its history.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import method_zoo  # noqa: E402
from orchestra import Module  # noqa: E402
from orchestra.jobstate.checkpointing import AtomicCheckpointIO  # noqa: E402
from orchestra.jobstate.history import ValidationHistory  # noqa: E402
from orchestra.model.backbones import from_torchvision  # noqa: E402

OPTIM = {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-6, "warmup_epochs": 0}
# case -> (torchvision name, low-resolution stem, embedding width, image size, images per batch; 2 views each)
CASES = {
    "resnet50-224px": ("resnet50", False, 2048, 224, 128),
    "resnet18-32px": ("resnet18", True, 512, 32, 512),
}
Batch = dict[str, torch.Tensor]


def make_parts(case: str) -> tuple[nn.Module, nn.Module]:
    name, low_res, width, _, _ = CASES[case]
    projector = nn.Sequential(nn.Linear(width, 2048), nn.BatchNorm1d(2048), nn.ReLU(), nn.Linear(2048, 128))
    return from_torchvision(name, low_resolution=low_res), projector


def make_batch(case: str) -> Batch:
    _, _, _, size, n = CASES[case]
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(2 * n, 3, size, size, generator=gen).cuda().contiguous(memory_format=torch.channels_last)
    # sample_idx stays on the host, as the data loaders deliver it (the Module does not move it: see split_views)
    return {"image": image, "sample_idx": torch.arange(n).repeat(2),
            "label": torch.randint(0, 1000, (n,), generator=gen).repeat(2).cuda()}


class Window(pl.Callback):
    """Synchronised wall time from the start of step ``warmup`` to the end of training."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, index: int) -> None:
        if trainer.global_step == self.warmup and not self.start:
            torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        torch.cuda.synchronize()
        self.end = time.perf_counter()


def run_orchestra(parts: tuple[nn.Module, nn.Module], batch: Batch, steps: int, warmup: int) -> float:
    backbone, projector = copy.deepcopy(parts)
    module = Module(forward=method_zoo.simclr_forward, backbone=backbone, projector=projector,
                    simclr_loss=method_zoo.NTXEntLoss(0.1), optim=OPTIM)
    module = module.to(memory_format=torch.channels_last)
    window = Window(warmup)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(accelerator="gpu", devices=1, precision="bf16-mixed", max_steps=steps, logger=False,
                             default_root_dir=tmp, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                             callbacks=[window, ValidationHistory(echo=False)], plugins=[AtomicCheckpointIO()])
        trainer.fit(module, train_dataloaders=DataLoader([batch] * steps, batch_size=None))  # type: ignore[arg-type]
    return window.end - window.start


class SyncWatch(pl.Callback):
    """Records where the training step synchronises with the GPU (torch's sync debug mode) over two steps."""

    def __init__(self, at_step: int) -> None:
        self.at_step, self.sites, self._previous = at_step, {}, None

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, index: int) -> None:
        if trainer.global_step == self.at_step:
            self._previous = warnings.showwarning
            warnings.simplefilter("always")
            warnings.showwarning = self._record
            torch.cuda.set_sync_debug_mode("warn")

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args: Any) -> None:
        if trainer.global_step == self.at_step + 2 and self._previous is not None:
            torch.cuda.set_sync_debug_mode(0)
            warnings.showwarning, self._previous = self._previous, None

    def _record(self, message: Any, category: Any, filename: str, lineno: int, *args: Any) -> None:
        if "synchroniz" not in str(message):
            return
        frames = [f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in traceback.extract_stack()[-9:-2]]
        key = " <- ".join(reversed(frames))
        self.sites[key] = self.sites.get(key, 0) + 1


def sync_sites(case: str) -> dict[str, int]:
    torch.manual_seed(0)
    backbone, projector = make_parts(case)
    module = Module(forward=method_zoo.simclr_forward, backbone=backbone, projector=projector,
                    simclr_loss=method_zoo.NTXEntLoss(0.1), optim=OPTIM).to(memory_format=torch.channels_last)
    watch = SyncWatch(at_step=3)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(accelerator="gpu", devices=1, precision="bf16-mixed", max_steps=6, logger=False,
                             default_root_dir=tmp, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                             callbacks=[watch], plugins=[AtomicCheckpointIO()])
        trainer.fit(module, train_dataloaders=DataLoader([make_batch(case)] * 6, batch_size=None))  # type: ignore
    return watch.sites


def run_hand(parts: tuple[nn.Module, nn.Module], batch: Batch, steps: int, warmup: int) -> float:
    backbone, projector = copy.deepcopy(parts)
    model = nn.Sequential(backbone, projector).cuda().to(memory_format=torch.channels_last).train()
    loss_fn = method_zoo.NTXEntLoss(0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=OPTIM["lr"], momentum=OPTIM["momentum"],
                                weight_decay=OPTIM["weight_decay"])
    # the same per-step cosine schedule the Module's LambdaLR applies
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    start = 0.0
    for step in range(steps):
        if step == warmup:
            torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            z_a, z_b = model(batch["image"]).chunk(2)  # sample_idx is arange(N).repeat(2): the halves are the views
            loss = loss_fn(z_a, z_b)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def bench_case(case: str, repeats: int, steps: int, warmup: int) -> list[str]:
    torch.manual_seed(0)
    parts, batch = make_parts(case), make_batch(case)
    images = CASES[case][4] * (steps - warmup)
    rates: dict[str, list[float]] = {"orchestra": [], "hand": []}
    peaks: dict[str, float] = {}
    runners = {"orchestra": run_orchestra, "hand": run_hand}
    for r in range(repeats):
        for side in (["orchestra", "hand"] if r % 2 == 0 else ["hand", "orchestra"]):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            rates[side].append(images / runners[side](parts, batch, steps, warmup))
            peaks[side] = max(peaks.get(side, 0.0), torch.cuda.max_memory_allocated() / 2**30)
    ratios = [o / h for o, h in zip(rates["orchestra"], rates["hand"], strict=True)]
    return [case, f"{statistics.median(rates['orchestra']):.0f}", f"{statistics.median(rates['hand']):.0f}",
            f"{statistics.median(ratios):.3f}", f"{min(ratios):.3f}–{max(ratios):.3f}",
            f"{peaks['orchestra']:.2f}", f"{peaks['hand']:.2f}"]


def _cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat: utilisation over a window is the ratio of differences."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)  # idle and iowait are not busy


class CpuWindow(Window):
    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, index: int) -> None:
        if trainer.global_step == self.warmup and not self.start:
            self.cpu = _cpu_busy()
        super().on_train_batch_start(trainer, module, batch, index)

    def on_train_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        super().on_train_end(trainer, module)
        busy, total = _cpu_busy()
        self.utilisation = (busy - self.cpu[0]) / max(1, total - self.cpu[1])


def folder_case(case: str, images: int, steps: int, warmup: int) -> list[str]:
    """SimCLR from a folder of generated 256-px JPEGs with data.pipeline=gpu (workers decode, views on the GPU),
    against the device-resident ceiling of the same case; CPU utilisation of the whole machine and peak GPU memory."""
    sys.path.insert(0, str(ROOT / "bench"))
    from loader_throughput import write_images

    from orchestra.data.datamodule import build_datamodule

    _, _, _, size, n = CASES[case]
    root = write_images(Path(tempfile.gettempdir()) / f"gpu-check-jpegs-{images}", images)
    data = {"dataset": "imagefolder", "root": str(root), "num_classes": 10, "channels": 3, "image_size": size,
            "batch_size": n, "eval_batch_size": n, "views": 2, "augment": "natural", "num_workers": "auto",
            "pipeline": "gpu", "verify_images": 0}
    torch.manual_seed(0)
    parts = make_parts(case)
    ceiling = n * (steps - warmup) / run_orchestra(parts, make_batch(case), steps, warmup)
    backbone, projector = copy.deepcopy(parts)
    module = Module(forward=method_zoo.simclr_forward, backbone=backbone, projector=projector,
                    simclr_loss=method_zoo.NTXEntLoss(0.1), optim=OPTIM).to(memory_format=torch.channels_last)
    window = CpuWindow(warmup)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = pl.Trainer(accelerator="gpu", devices=1, precision="bf16-mixed", max_steps=steps, logger=False,
                             default_root_dir=tmp, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                             callbacks=[window, ValidationHistory(echo=False)], plugins=[AtomicCheckpointIO()])
        trainer.fit(module, datamodule=build_datamodule(data, seed=0, accelerator="gpu"))
    rate = n * (steps - warmup) / (window.end - window.start)
    return [f"{case} folder, pipeline=gpu", f"{rate:.0f}", f"{ceiling:.0f}", f"{rate / ceiling:.3f}",
            f"{100 * window.utilisation:.0f}% of {os.cpu_count()}", f"{torch.cuda.max_memory_allocated() / 2**30:.2f}"]


SMOKE_OVERRIDES = ["backbone=resnet18", "trainer=gpu", "trainer.devices=1", "logger=none",
                   "data.batch_size=128", "trainer.limit_train_batches=10", "trainer.limit_val_batches=2",
                   "data.val_limit=2000", "trainer.max_epochs=1"]


def _run_member(job_dir: Path, log: Path, timeout: int) -> tuple[int, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with log.open("a") as out:
        done = subprocess.run([sys.executable, "-m", "orchestra.job", str(job_dir)], cwd=ROOT, env=env,
                              stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    return done.returncode, log.read_text()


def smoke_member(strategy: str, root: Path, timeout: int, method: str = "simclr") -> list[str]:
    """Train 10 steps, then run the same job dir with a second epoch: it must resume and end at step 20."""
    from omegaconf import OmegaConf

    from orchestra.config.compose import compose
    from orchestra.jobstate.job_dir import prepare_job_dir

    job_dir = root / f"smoke-{strategy}"
    log = root / f"smoke-{strategy}.log"
    started = time.perf_counter()
    try:
        prepare_job_dir(job_dir, compose([f"method={method}", *SMOKE_OVERRIDES, f"strategy={strategy}"]))
        code, text = _run_member(job_dir, log, timeout)
        if code != 0:
            return [strategy, "FAILED", "first run", _last_line(text), f"{time.perf_counter() - started:.0f}"]
        cfg = OmegaConf.load(job_dir / "config.yaml")
        cfg.trainer.max_epochs = 2
        (job_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        code, text = _run_member(job_dir, log, timeout)
    except Exception as err:  # one broken strategy must not hide the others' rows
        reason = f"{type(err).__name__}: {err}"[:120]
        return [strategy, "FAILED", "setup", reason, f"{time.perf_counter() - started:.0f}"]
    results = json.loads((job_dir / "results.json").read_text()) if (job_dir / "results.json").exists() else {}
    steps = [r["step"] for r in results.get("history", [])]
    resumed = "resuming from" in text
    ok = code == 0 and results.get("state") == "COMPLETED" and steps == [10, 20] and resumed
    detail = (f"steps {steps}, attempts {results.get('attempts')}, resumed={resumed}, "
              f"kNN {results.get('metrics', {}).get('knn/top1', float('nan')):.3f}")
    return [strategy, "ok" if ok else "FAILED", detail, "" if ok else _last_line(text),
            f"{time.perf_counter() - started:.0f}"]


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:160] if lines else ""


def show(title: str, headers: list[str], rows: list[list[str]]) -> None:
    print(f"\n**{title}**\n\n| " + " | ".join(headers) + " |\n|" + "|".join(["---"] * len(headers)) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=10, help="steps not timed (cudnn autotune, allocator growth)")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--strategies", default="ddp,fsdp,deepspeed")
    parser.add_argument("--folder-images", type=int, default=2048,
                        help="JPEGs for the end-to-end folder case (0 skips it)")
    parser.add_argument("--sync-debug", action="store_true", help="first list where a training step syncs the GPU")
    parser.add_argument("--smoke-method", default="simclr", help="method of the smoke members (byol: EMA teacher)")
    parser.add_argument("--smoke-timeout", type=int, default=240, help="seconds per smoke-member run")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("error: no CUDA device visible; bench/gpu_check.sh is for a GPU machine (the CPU tests cover the rest)")
        return 2
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.backends.cudnn.benchmark = True
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, lightning {pl.__version__}, "
          f"{args.repeats} repeats x {args.steps} steps ({args.warmup} warm-up steps not timed)", flush=True)
    if args.sync_debug:
        sites = sync_sites(args.cases.split(",")[-1])
        print(f"\nGPU synchronisations in 2 orchestra training steps: {sum(sites.values())}")
        for site, count in sorted(sites.items(), key=lambda item: -item[1]):
            print(f"  {count} x {site}")
    rows = []
    for case in [c for c in args.cases.split(",") if c]:
        rows.append(bench_case(case, args.repeats, args.steps, args.warmup))
        show("SimCLR training throughput, bf16-mixed + channels_last (images/s; each image is 2 views)",
             ["case", "orchestra img/s", "hand img/s", "ratio (median)", "ratio min–max", "orchestra peak GiB",
              "hand peak GiB"], rows)
    if args.folder_images:
        row = folder_case("resnet50-224px", args.folder_images, args.steps, args.warmup)
        show("End to end from a JPEG folder (data.pipeline=gpu, num_workers=auto) vs device-resident batches",
             ["case", "folder img/s", "device-resident img/s", "ratio", "CPU busy (machine)", "peak GiB"], [row])
    smoke = []
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in [s for s in args.strategies.split(",") if s]:
            smoke.append(smoke_member(strategy, Path(tmp), args.smoke_timeout, args.smoke_method))
            show(f"Smoke members ({args.smoke_method}) on 1 GPU: 10 steps, then resume the same job dir to step 20",
                 ["strategy", "result", "detail", "last log line on failure", "s"], smoke)
            out = os.environ.get("OUT")
            if out:  # the device tool brings back files written under $OUT
                for log in Path(tmp).glob("*.log"):
                    (Path(out) / log.name).write_text(log.read_text()[-20000:])
                for results in Path(tmp).glob("smoke-*/results.json"):
                    (Path(out) / f"{results.parent.name}-results.json").write_text(results.read_text())
    return 0 if all(row[1] == "ok" for row in smoke) else 1


if __name__ == "__main__":
    sys.exit(main())
