"""Per-sample random augmentation on the CPU: orchestra's ViewBuilder vs kornia vs torchvision v2 in a loop.

One batch of 256 uint8 3x256x256 images -> 2 views of 224 px, each image with its own random parameters: random
resized crop (area 0.2-1), horizontal flip, colour jitter 0.4 (p=0.8; no hue: ours has none), grayscale (p=0.2) and
Gaussian blur (p=0.5, sigma 0.1-2 px, 13-tap kernel) -- the ``natural`` preset plus blur. Prints wall and CPU seconds
per batch (median of the repeats), views per CPU second, each candidate's CPU time over ours, and whether the views
can be drawn from a ``torch.Generator`` (our batches are a pure function of (seed, epoch, batch): resume and DDP
shards rely on it) and repeat exactly for the same seed. Not a test; figures are noisy on a shared machine.

    .venv/bin/python bench/augment_candidates.py [--batch 256] [--repeats 3] [--quick] [--profile [--before REV]]

``--profile`` instead times ViewBuilder step by step on one thread (the ``natural`` preset plus blur and
solarize), today's code against augment_ops.py and views.py as they were at git ``--before`` (default: the commit
before the chunked rewrite), alternating in the same run: read the ratios, the machine is shared.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from dataclasses import replace

import torch

from orchestra.data import augment_ops
from orchestra.data.augment import PRESETS, Recipe
from orchestra.data.views import ViewBuilder

SIZE, OUT, VIEWS = 256, 224, 2
BEFORE_A3 = "4c2b74d"  # augment_ops.py / views.py before chunking and the in-place steps (issue 14, A3)
SPEC = replace(PRESETS["natural"].for_view(0), blur_p=0.5, blur_sigma=(0.1, 2.0))


def raw_batch(images: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    n = images.shape[0]
    return {"raw": images, "label": torch.zeros(n, dtype=torch.int64), "sample_idx": torch.arange(n),
            "batch_key": torch.tensor([0, seed, 0, 1, n])}


def ours() -> Callable[[torch.Tensor, int], torch.Tensor]:
    builder = ViewBuilder(Recipe((SPEC,), SPEC), VIEWS, OUT, seed=0, normalize=lambda x: x)
    return lambda images, seed: builder(raw_batch(images, seed))["image"]


def kornia_candidate() -> Callable[[torch.Tensor, int], torch.Tensor] | None:
    try:
        import kornia.augmentation as K
    except ImportError:
        return None
    pipeline = K.AugmentationSequential(
        K.RandomResizedCrop((OUT, OUT), scale=SPEC.crop_scale, ratio=SPEC.crop_ratio),
        K.RandomHorizontalFlip(),
        K.ColorJitter(SPEC.color_jitter, SPEC.color_jitter, SPEC.color_jitter, 0.0, p=0.8),
        K.RandomGrayscale(p=SPEC.grayscale_p),
        K.RandomGaussianBlur((13, 13), sigma=SPEC.blur_sigma, p=SPEC.blur_p),
    )

    def run(images: torch.Tensor, seed: int) -> torch.Tensor:
        torch.manual_seed(seed)  # kornia samples its parameters from the global RNG; it takes no generator
        pixels = images.float().div_(255)
        return torch.cat([pipeline(pixels) for _ in range(VIEWS)])

    return run


def torchvision_loop() -> Callable[[torch.Tensor, int], torch.Tensor]:
    from torchvision.transforms import v2

    one = v2.Compose([
        v2.RandomResizedCrop(OUT, scale=SPEC.crop_scale, ratio=SPEC.crop_ratio, antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(SPEC.color_jitter, SPEC.color_jitter, SPEC.color_jitter)], p=0.8),
        v2.RandomGrayscale(p=SPEC.grayscale_p),
        v2.RandomApply([v2.GaussianBlur(13, sigma=SPEC.blur_sigma)], p=SPEC.blur_p),
        v2.ToDtype(torch.float32, scale=True),
    ])

    def run(images: torch.Tensor, seed: int) -> torch.Tensor:
        torch.manual_seed(seed)  # v2 draws from the global RNG, per image and per step
        return torch.cat([torch.stack([one(image) for image in images]) for _ in range(VIEWS)])

    return run


def measure(fn: Callable[[torch.Tensor, int], torch.Tensor], images: torch.Tensor, repeats: int) -> dict:
    fn(images[:8], 0)  # warm-up: first-call allocations and lazy imports
    wall, cpu = [], []
    for r in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn(images, r)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        assert out.shape == (VIEWS * images.shape[0], 3, OUT, OUT), out.shape
    # the same seed twice (on a few images, to keep the slow candidates affordable): do the views repeat exactly?
    repeats_exactly = torch.equal(fn(images[:8], 7), fn(images[:8], 7))
    return {"wall": statistics.median(wall), "cpu": statistics.median(cpu), "repeats_exactly": repeats_exactly}


def module_at(rev: str, name: str, renames: dict[str, str]) -> types.ModuleType:
    """orchestra/data/``name``.py as it was at git ``rev``, importable beside today's (``renames`` its imports)."""
    source = subprocess.run(["git", "show", f"{rev}:orchestra/data/{name}.py"], check=True, capture_output=True,
                            text=True).stdout
    for old, new in renames.items():
        source = source.replace(old, new)
    module = types.ModuleType(f"before_{name}")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{rev}:{name}.py", "exec"), module.__dict__)
    return module


def step_times(ops: types.ModuleType, images: torch.Tensor, spec, chunk: int) -> dict[str, float]:
    """Seconds per step for one view of ``images`` through ``ops``' apply functions, ``chunk`` rows at a time."""
    params = ops.draw_view(spec, images.shape[0], 3, torch.Generator().manual_seed(1))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    inplace = hasattr(ops, "jitter_")
    steps = {
        "uint8 -> float": lambda x, p: x.float().div_(255),
        "crop (grid_sample)": lambda x, p: ops.apply_crop(x, p.theta, OUT),
        "colour jitter": lambda x, p: (ops.jitter_ if inplace else ops.apply_jitter)(x, p.jitter_on, p.jitter),
        "grayscale": lambda x, p: (ops.gray_ if inplace else ops.apply_gray)(x, p.gray),
        "blur": lambda x, p: (ops.blur_ if inplace else ops.apply_blur)(x, p.blur_on, p.sigma, spec.blur_sigma[1]),
        "solarize": lambda x, p: (ops.solarize_ if inplace else ops.apply_solarize)(x, p.solarize),
        "normalise": lambda x, p: (x - mean) / std,
    }
    seconds = dict.fromkeys(steps, 0.0)
    for start in range(0, images.shape[0], chunk):
        x, rows = images[start:start + chunk], params.rows(torch.arange(start, min(start + chunk, images.shape[0])))
        for name, step in steps.items():
            began = time.perf_counter()
            x = step(x, rows)
            seconds[name] += time.perf_counter() - began
    return seconds


def profile(images: torch.Tensor, repeats: int, before: str) -> None:
    """Before/after, step by step and whole ViewBuilder calls, alternating so that both see the same load."""
    from orchestra.data.views import chunk_rows

    torch.set_num_threads(1)
    old_ops = module_at(before, "augment_ops", {})
    old_views = module_at(before, "views", {"orchestra.data.augment_ops import": "before_augment_ops import"})
    spec = replace(SPEC, solarize_p=0.2)
    recipe = Recipe((spec,), spec)
    builders = {"before": old_views.ViewBuilder(recipe, VIEWS, OUT, 0, lambda x: (x - 0.45) / 0.23),
                "after": ViewBuilder(recipe, VIEWS, OUT, 0, lambda x: (x - 0.45) / 0.23)}
    chunk = chunk_rows(images.shape[0], images.device)
    steps: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    whole: dict[str, list[float]] = {"before": [], "after": []}
    differ = 0.0
    for r in range(repeats):
        for name in ("before", "after") if r % 2 == 0 else ("after", "before"):
            ops, rows = (old_ops, images.shape[0]) if name == "before" else (augment_ops, chunk)
            steps[name].append(step_times(ops, images, spec, rows))
            began = time.perf_counter()
            out = builders[name](raw_batch(images, r))["image"]
            whole[name].append(time.perf_counter() - began)
        other = builders["before" if name == "after" else "after"](raw_batch(images, r))["image"]
        differ = max(differ, (out - other).abs().max().item())
    print(f"{images.shape[0]} images 3x{SIZE}x{SIZE}, one view of {OUT} px per step ({spec.blur_p=}, "
          f"{spec.solarize_p=}), 1 thread, median of {repeats}; before = git {before} (whole batch), after = "
          f"today ({chunk} rows a chunk); the two builders' views differ by at most {differ:.1e}")
    print(f"{'step':28} {'before ms':>10} {'after ms':>10} {'before/after':>13}")
    for step in steps["after"][0]:
        b, a = (statistics.median(s[step] for s in steps[n]) * 1e3 for n in ("before", "after"))
        print(f"{step:28} {b:10.0f} {a:10.0f} {b / a:12.2f}x")
    b, a = (statistics.median(whole[n]) * 1e3 for n in ("before", "after"))
    ratio = statistics.median(x / y for x, y in zip(whole["before"], whole["after"], strict=True))
    print(f"{'ViewBuilder, ' + str(VIEWS) + ' views':28} {b:10.0f} {a:10.0f} {ratio:12.2f}x  (median of ratios)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a batch of 32, one repeat: checks that it runs")
    parser.add_argument("--profile", action="store_true", help="ViewBuilder step by step, before vs after")
    parser.add_argument("--before", default=BEFORE_A3, help="git revision --profile compares with")
    args = parser.parse_args()
    batch, repeats = (32, 1) if args.quick else (args.batch, args.repeats)
    images = torch.randint(0, 256, (batch, 3, SIZE, SIZE), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    if args.profile:
        profile(images, repeats, args.before)
        return
    candidates = {
        "orchestra ViewBuilder (batched)": (ours(), "yes: a torch.Generator per (seed, epoch, batch, view)"),
        "kornia 0.9 augmentation (batched)": (kornia_candidate(), "global RNG only (torch.manual_seed/fork_rng)"),
        "torchvision v2, per image loop": (torchvision_loop(), "global RNG only (torch.manual_seed/fork_rng)"),
    }
    print(f"{batch} uint8 images 3x{SIZE}x{SIZE} -> {VIEWS} views of {OUT} px, CPU, {torch.get_num_threads()} "
          f"threads, median of {repeats}; CPU s = this process's CPU time (less hurt by a shared machine)")
    print(f"{'candidate':36} {'wall s':>7} {'CPU s':>7} {'views/CPU s':>11} {'CPU vs ours':>11}  "
          f"{'same seed, same views':>21}  generator")
    base = None
    for name, (fn, seeding) in candidates.items():
        if fn is None:
            print(f"{name:36} skipped (not installed)")
            continue
        result = measure(fn, images, repeats)
        base = base or result["cpu"]
        print(f"{name:36} {result['wall']:7.2f} {result['cpu']:7.2f} {VIEWS * batch / result['cpu']:11.1f} "
              f"{result['cpu'] / base:10.2f}x  {str(result['repeats_exactly']):>21}  {seeding}")

if __name__ == "__main__":
    main()
