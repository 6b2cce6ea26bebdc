"""Images per second read from a packed split vs decoded from the same folder of JPEGs (issue 14).

    .venv/bin/python bench/packed_read.py [--images 2000] [--size 256] [--batch 256] [--workers 2]

Writes ``--images`` JPEGs of 320 x 256 px (smooth random pictures with grain, 4 classes; about what a photo
compresses to) into a temporary folder, packs them with ``orchestra.data.packed.pack_folder`` and then, in this one
process: decodes every file with ``decode_resized`` (what a loader does per image without a packed set), and reads
shuffled batches of rows from the packed memory map with ``ImageArrays.take`` (what data=packed does per batch), once
cold-ish (just written, likely still in the page cache: this script cannot drop the cache without root) and once
warm. The figures are reading only, no augmentation. Each is given per wall second and per CPU second of the
processes doing the work: on a shared machine the second says more. This is a benchmark, not a test; BENCHMARKS.md
holds figures.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def write_jpegs(root: Path, count: int, classes: int = 4) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / ("train" if i % 10 else "val") / f"class_{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((320, 256), Image.BICUBIC)
        grain = rng.integers(-8, 9, (256, 320, 3))
        Image.fromarray((np.asarray(image, dtype=np.int16) + grain).clip(0, 255).astype(np.uint8)).save(
            folder / f"{i:05d}.jpg", quality=90)


def cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (the pack's decoding workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(work) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``work()``."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    work()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from orchestra.data.checks import read_folders
    from orchestra.data.decode import decode_resized
    from orchestra.data.packed import pack_folder, read_packed

    torch.set_num_threads(1)
    base = Path(tempfile.mkdtemp(prefix="packed-bench-"))
    try:
        write_jpegs(base / "src", args.images)
        jpeg_bytes = sum(p.stat().st_size for p in (base / "src").rglob("*.jpg"))
        import orchestra.data.decode  # noqa: F401  torch's import is not the pack's cost

        meta = {}
        pack_wall, pack_cpu = timed(lambda: meta.update(pack_folder(base / "src", base / "dst", size=args.size,
                                                                    workers=args.workers)))
        paths = [path for path, _ in read_folders(str(base / "src")).train]
        rows = [("decode_resized per JPEG file", *timed(lambda: [decode_resized(p, args.size) for p in paths]))]
        train, _, _ = read_packed(base / "dst")
        for epoch, when in enumerate(("first pass after packing", "second pass")):
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(epoch))
            batches = [order[first:first + args.batch] for first in range(0, len(order), args.batch)]
            rows.append((f"packed take(), shuffled batches of {args.batch}, {when}",
                         *timed(lambda batches=batches: [train.take(b) for b in batches])))

        total = meta["counts"]["train"] + meta["counts"]["val"]
        print(f"{len(paths)} train images, JPEGs {jpeg_bytes / 2**20:.1f} MiB, packed {meta['bytes'] / 2**20:.1f} MiB "
              f"at {args.size} px; packing {total} images with {args.workers} workers: {pack_wall:.1f} s wall, "
              f"{total / pack_cpu:.0f} images per CPU second")
        print("| read path (one process, one thread) | images/s (wall) | images per CPU second |\n|---|---|---|")
        for name, wall, cpu in rows:
            print(f"| {name} | {len(paths) / wall:,.0f} | {len(paths) / cpu:,.0f} |")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
