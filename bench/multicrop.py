"""What multi-crop costs per training step on CPU: 2 global views vs 2 global + L local crops.

    .venv/bin/python bench/multicrop.py [--local 6] [--steps 6] [--repeats 3] [--batch 256]

Each step is one batch from the real data module (mnist10k, augmentation included) and one forward and backward
pass of the default SmallCNN backbone, one call per resolution group as DINO and SwAV make it. The heads and
losses are left out: they differ between methods, the crops' cost does not. Both settings run back to back in
every repeat (alternating which goes first); the table shows medians, and the ratio is the median of the
per-repeat ratios, the figure to read on a noisy machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from orchestra.data.datamodule import build_datamodule
from orchestra.model.backbones import SmallCNN


def _loader(local: int, augment: str, batch: int):
    data = build_datamodule({"dataset": "mnist10k", "batch_size": batch, "views": 2, "local_views": local,
                             "local_size": 14, "augment": augment}, seed=0)
    data.setup("fit")
    return data.train_dataloader()


def _time_steps(loader, backbone: torch.nn.Module, steps: int) -> tuple[float, float]:
    """(ms per batch to make it, ms per forward+backward), medians over ``steps`` after one warm-up step."""
    make, model = [], []
    batches = iter(loader)
    for step in range(steps + 1):
        start = time.perf_counter()
        batch = next(batches)
        made = time.perf_counter()
        groups = [batch["image"], *([batch["local_image"]] if "local_image" in batch else [])]
        loss = sum(backbone(group).pow(2).mean() for group in groups)
        loss.backward()
        done = time.perf_counter()
        if step:  # the first carries lazy initialisation
            make.append((made - start) * 1e3)
            model.append((done - made) * 1e3)
    return statistics.median(make), statistics.median(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local", type=int, default=6)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    torch.manual_seed(0)
    backbone = SmallCNN(in_channels=1)
    settings = {"2 views (digits)": (0, "digits"), "2 views (dino_digits)": (0, "dino_digits"),
                f"2 + {args.local} crops (dino_digits)": (args.local, "dino_digits")}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in settings}
    for repeat in range(args.repeats):
        order = list(settings) if repeat % 2 == 0 else list(reversed(settings))
        for name in order:
            times[name].append(_time_steps(_loader(*settings[name], args.batch), backbone, args.steps))
    base = "2 views (digits)"
    print(f"batch {args.batch}, {torch.get_num_threads()} threads, median of {args.repeats} repeats x "
          f"{args.steps} steps")
    print(f"{'setting':<28} {'batch ms':>9} {'fwd+bwd ms':>11} {'step ms':>9} {'x 2 views':>10}")
    for name, runs in times.items():
        ratio = statistics.median(sum(r) / sum(b) for r, b in zip(runs, times[base], strict=True))
        make, model = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        print(f"{name:<28} {make:>9.1f} {model:>11.1f} {make + model:>9.1f} {ratio:>10.2f}")


if __name__ == "__main__":
    main()
