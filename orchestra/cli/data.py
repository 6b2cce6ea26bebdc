"""``orchestra data pack SRC DST``: decode an image folder once into a packed dataset (``orchestra.data.packed``)."""

from __future__ import annotations

import os
import sys
import time
import warnings

from orchestra.errors import UserError

USAGE = """usage: orchestra data pack SRC DST [--size 256] [--skip-bad-images] [--workers N]

Pack the image folder SRC (SRC/train/<class>/*, SRC/val/<class>/*, the layout of data=imagefolder) into DST: each
split becomes one memory-mapped uint8 array of centre squares resized to --size, with its labels and DST/meta.json.
Training on it (data=packed data.root=DST) reads only the rows of each batch and decodes no JPEG; labels follow
train's class folders exactly as data=imagefolder reads them. DST appears only once the pack is complete.

options:
  -h, --help          this help
  --size S            side of the stored square images in pixels (default 256; train with data.image_size <= S)
  --skip-bad-images   leave unreadable image files out (each is named in a warning and in DST/meta.json) instead
                      of stopping at the first
  --workers N         decoding processes (default: the CPUs this process may use)
"""

EVERY_S = 5.0  # seconds between progress lines: a log file gets a readable trail, a terminal is not flooded


def _int_option(args: list[str], name: str, default: int | None) -> tuple[int | None, list[str]]:
    """The value of ``--name N`` or ``--name=N`` (removed from args), checked to be a positive integer."""
    rest, value, found = [], default, None
    it = iter(args)
    for arg in it:
        if arg == name:
            found = next(it, None)
            if found is None:
                raise UserError(f"{name} needs a value, e.g. {name} 4")
        elif arg.startswith(f"{name}="):
            found = arg.split("=", 1)[1]
        else:
            rest.append(arg)
            continue
        if not found.isdigit() or int(found) < 1:
            raise UserError(f"{name} must be a positive integer, got {found!r}")
        value = int(found)
    return value, rest


def run(args: list[str]) -> int:
    if not args or args[0] != "pack":
        raise UserError("usage: orchestra data pack SRC DST [--size 256] [--skip-bad-images] [--workers N]")
    size, rest = _int_option(args[1:], "--size", 256)
    workers, rest = _int_option(rest, "--workers", None)
    skip = "--skip-bad-images" in rest
    rest = [a for a in rest if a != "--skip-bad-images"]
    unknown = [a for a in rest if a.startswith("-")]
    if unknown:
        raise UserError(f"unknown option {unknown[0]} for orchestra data pack; options: --size, --skip-bad-images, "
                        f"--workers")
    if len(rest) != 2:
        raise UserError(f"orchestra data pack needs SRC and DST (got {len(rest)} paths): "
                        f"orchestra data pack SRC DST [--size 256]")
    return pack(rest[0], rest[1], size, skip, workers)


class _ProgressLine:
    """A line per split every few seconds: images done, rate, and the time left at that rate."""

    def __init__(self) -> None:
        self.started = self.shown = time.monotonic()

    def __call__(self, split: str, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.shown < EVERY_S and done < total:
            return
        self.shown = now
        rate = done / max(now - self.started, 1e-9)
        left = f", about {(total - done) / rate:.0f} s left" if done < total and rate > 0 else ""
        print(f"  {split}: {done}/{total} images ({rate:.0f} images/s{left})", flush=True)
        if done == total:
            self.started = now


def pack(src: str, dst: str, size: int, skip_bad_images: bool, workers: int | None) -> int:
    from orchestra.data.packed import pack_folder

    workers = workers or len(os.sched_getaffinity(0))
    print(f"packing {src} -> {dst} ({size}x{size} px, {workers} decoding processes)", flush=True)
    started = time.monotonic()
    with warnings.catch_warnings(record=True) as skipped:  # one plain line per file left out
        warnings.simplefilter("always")
        meta = pack_folder(src, dst, size=size, skip_bad_images=skip_bad_images, workers=workers,
                           progress=_ProgressLine())
    seconds = time.monotonic() - started
    for warning in skipped:
        print(f"warning: {warning.message}", file=sys.stderr)
    counts = meta["counts"]
    print(f"wrote {dst}: train {counts['train']} images, val {counts['val']} images, {len(meta['classes'])} classes, "
          f"{meta['bytes'] / 2**20:.1f} MiB in {seconds:.1f} s"
          + (f"; {len(meta['skipped'])} unreadable file(s) left out (listed in meta.json)" if meta["skipped"] else ""))
    print(f"train on it with:  orchestra train data=packed data.root={dst} data.num_classes={len(meta['classes'])} "
          f"data.image_size={min(224, size)}")
    return 0
