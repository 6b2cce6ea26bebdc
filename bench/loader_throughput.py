"""Images per second a training loader delivers from a folder of JPEGs: orchestra's vs the peers' way (issue 14).

    .venv/bin/python bench/loader_throughput.py [--images 5000] [--batches 16] [--repeats 2] [--workers 2] [--quick]

The first run writes ``--images`` 256 x 256 JPEGs (random smooth pictures with a little grain, 10 classes) under
``$ORCHESTRA_BENCH_CACHE`` (default: the temp folder) and keeps them for later runs. Each setting then iterates its
training DataLoader for ``--batches`` batches of ``--batch`` images (2 views of 224 px each) after one warm-up batch,
with the same number of worker processes, and nothing else: the figure is what the loader can feed a training
step. Settings alternate order between repeats; the table shows medians, ratios are medians of per-repeat ratios.

orchestra: ``data=imagefolder`` with ``data.pipeline=cpu``: each file decoded once (torchvision.io) to 256 px, both
views drawn for the whole batch by the batched augmentation in the workers. The peers' way (lightly, solo-learn): an
ImageFolder-style per-sample ``Dataset`` that opens each file with PIL and runs torchvision v2 transforms per view,
then the default collate. The profile below the table splits one batch's cost into decoding and augmenting, in
this process on one thread. This is a benchmark, not a test; BENCHMARKS.md holds measured figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
CLASSES = 10


def write_images(root: Path, count: int, side: int = 256) -> Path:
    """root/train/class_k/NNNNN.jpg (``count`` files) and 5 val images per class; reused when already complete."""
    from PIL import Image

    done = root / "complete"
    if done.exists():
        return root
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small ops: one thread is faster than two fighting other processes for the cores
    gen = torch.Generator().manual_seed(0)
    for split, total in (("train", count), ("val", 5 * CLASSES)):
        for i in range(total):
            folder = partial / split / f"class_{i % CLASSES}"
            folder.mkdir(parents=True, exist_ok=True)
            cells = torch.randint(0, 256, (3, 6, 6), generator=gen).float().unsqueeze(0)
            picture = torch.nn.functional.interpolate(cells, size=(side, side), mode="bicubic", align_corners=False)
            picture = picture + 6 * torch.randn(picture.shape, generator=gen)  # grain: file sizes like photos'
            pixels = picture[0].clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
            Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
    torch.set_num_threads(threads)
    (partial / "complete").write_text(f"{count}\n")
    shutil.rmtree(root, ignore_errors=True)
    partial.rename(root)
    return root


class PilBlur:
    """Gaussian blur with PIL's ImageFilter (radius = sigma in 0.1-2) with p=0.5: how lightly and solo-learn blur."""

    def __call__(self, image):
        from PIL import ImageFilter

        if torch.rand(()) >= 0.5:
            return image
        return image.filter(ImageFilter.GaussianBlur(radius=float(torch.empty(()).uniform_(0.1, 2.0))))


class PeerViews(torch.utils.data.Dataset):
    """The peers' way: one sample per call, opened with PIL, ``views`` v2 pipelines, the default collate after.

    ``blur``: None, "v2" (torchvision's GaussianBlur, kernel 23, a float convolution) or "pil" (PIL's filter).
    """

    def __init__(self, root: Path, size: int, views: int, blur: str | None) -> None:
        from torchvision.transforms import v2

        self.files = sorted((root / "train").glob("*/*.jpg"))
        self.classes = sorted({f.parent.name for f in self.files})
        steps = [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(),
                 v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), v2.RandomGrayscale(p=0.2)]
        if blur == "v2":  # SimCLR's blur: kernel about a tenth of the crop, sigma 0.1-2
            steps.append(v2.RandomApply([v2.GaussianBlur(23, sigma=(0.1, 2.0))], p=0.5))
        elif blur == "pil":
            steps.append(PilBlur())
        steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                  v2.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
        self.transform, self.views = v2.Compose(steps), views

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.files[i]) as image:
            rgb = image.convert("RGB")
        return [self.transform(rgb) for _ in range(self.views)], self.classes.index(self.files[i].parent.name)


def peer_loader(root: Path, batch: int, workers: int, blur: str | None):
    return torch.utils.data.DataLoader(PeerViews(root, 224, 2, blur), batch_size=batch, shuffle=True, drop_last=True,
                                       num_workers=workers, persistent_workers=workers > 0)


def orchestra_module(root: Path, batch: int, workers: int, augment: str):
    from orchestra.data.datamodule import build_datamodule

    data = yaml.safe_load((REPO / "conf" / "data" / "imagefolder.yaml").read_text())
    data.update(root=str(root), num_classes=CLASSES, image_size=224, batch_size=batch, views=2,
                num_workers=workers, augment=augment, pipeline="cpu", verify_images=0)
    module = build_datamodule(data, seed=0)
    module.setup("fit")
    return module


def images_per_second(loader, batches: int) -> float:
    """Source images per second over ``batches`` batches, after a warm-up batch that starts the workers."""
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    seen = 0
    for _ in range(batches):
        batch = next(it)
        seen += len(batch[1]) if isinstance(batch, list) else len(batch["label"]) // 2
    elapsed = time.perf_counter() - start
    del it
    return seen / elapsed


def profile(root: Path, batch: int) -> dict[str, float]:
    """ms for one batch in this process, one thread: decoding and augmenting, each way."""
    from PIL import Image

    from orchestra.data.batches import BatchKey

    torch.set_num_threads(1)
    peer = PeerViews(root, 224, 2, blur="v2")
    files = peer.files[:batch]
    times = {}
    start = time.perf_counter()
    pictures = []
    for path in files:
        with Image.open(path) as image:
            pictures.append(image.convert("RGB"))
    times["peers: PIL decode"] = time.perf_counter() - start
    start = time.perf_counter()
    for picture in pictures:
        [peer.transform(picture) for _ in range(2)]
    times["peers: v2 transforms, 2 views (v2 blur)"] = time.perf_counter() - start
    plain = PeerViews(root, 224, 2, blur=None)
    start = time.perf_counter()
    for picture in pictures:
        [plain.transform(picture) for _ in range(2)]
    times["peers: v2 transforms, 2 views (no blur)"] = time.perf_counter() - start
    for augment in ("natural", "byol_natural"):
        module = orchestra_module(root, batch, 0, augment)
        key = BatchKey(0, 0, torch.arange(batch), 0, 1)
        train = module.folders["train"]
        builder, train.builder = train.builder, None
        start = time.perf_counter()
        raw = train[key]
        if augment == "natural":
            times["orchestra: torchvision.io decode to 256"] = time.perf_counter() - start
        start = time.perf_counter()
        builder(raw)
        times[f"orchestra: batched views ({augment})"] = time.perf_counter() - start
    torch.set_num_threads(os.cpu_count() or 1)
    return {name: seconds * 1e3 for name, seconds in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--batches", type=int, default=16)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1,000 images, 2 batches, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.images, args.batches, args.repeats = 1000, 2, 1
    cache = Path(os.environ.get("ORCHESTRA_BENCH_CACHE", Path(tempfile.gettempdir()) / "orchestra-bench"))
    started = time.perf_counter()
    root = write_images(cache / f"jpegs-{args.images}-256", args.images)
    files = sorted((root / "train").glob("*/*.jpg"))
    if args.batches > len(files) // args.batch - 1:  # one epoch holds the warm-up batch and the timed ones
        args.batches = max(1, len(files) // args.batch - 1)
        print(f"timing {args.batches} batches: one epoch of {len(files)} images holds no more after the warm-up")
    mean_kb = sum(f.stat().st_size for f in files) / len(files) / 1024
    print(f"{len(files)} JPEGs of 256 px ({mean_kb:.1f} KB on average) in {root} "
          f"({time.perf_counter() - started:.0f} s to find or write)")

    settings = {
        "peers: per-sample v2, v2 blur": lambda: peer_loader(root, args.batch, args.workers, "v2"),
        "orchestra cpu: byol_natural (blur)": lambda: orchestra_module(
            root, args.batch, args.workers, "byol_natural").train_dataloader(),
        "peers: per-sample v2, PIL blur": lambda: peer_loader(root, args.batch, args.workers, "pil"),
        "peers: per-sample v2, no blur": lambda: peer_loader(root, args.batch, args.workers, None),
        "orchestra cpu: natural (no blur)": lambda: orchestra_module(
            root, args.batch, args.workers, "natural").train_dataloader(),
    }
    rates: dict[str, list[float]] = {name: [] for name in settings}
    for repeat in range(args.repeats):
        for name in (list(settings) if repeat % 2 == 0 else list(reversed(settings))):
            rates[name].append(images_per_second(settings[name](), args.batches))
            print(f"  repeat {repeat}: {name}: {rates[name][-1]:.0f} images/s", flush=True)

    print(f"\n{args.workers} workers, batches of {args.batch} (2 views of 224 px), {args.batches} batches after a "
          f"warm-up, median of {args.repeats} repeats, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at the end")
    print(f"{'loader':<38} {'images/s':>9}   (source images; each gives 2 views)")
    for name, values in rates.items():
        print(f"{name:<38} {statistics.median(values):>9.0f}")
    for ours, theirs in (("orchestra cpu: byol_natural (blur)", "peers: per-sample v2, v2 blur"),
                         ("orchestra cpu: byol_natural (blur)", "peers: per-sample v2, PIL blur"),
                         ("orchestra cpu: natural (no blur)", "peers: per-sample v2, no blur")):
        ratio = statistics.median(a / b for a, b in zip(rates[ours], rates[theirs], strict=True))
        print(f"ratio {ours} / {theirs}: {ratio:.2f}x")

    print(f"\nprofile of one batch of {args.batch}, this process, 1 thread (ms):")
    for name, ms in profile(root, args.batch).items():
        print(f"  {name:<44} {ms:>8.0f}")


if __name__ == "__main__":
    main()
