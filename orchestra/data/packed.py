"""Packed datasets: an image folder decoded once into one memory-mapped uint8 array per split.

Layout of a packed folder (what ``orchestra data pack SRC DST`` writes)::

    DST/meta.json           classes (train's class-to-index order), size, channels, counts, source, skipped files,
                            per-channel mean/std of train, format version
    DST/train/images.npy    uint8 [N, 3, S, S]    (plain .npy: numpy.load(mmap_mode="r") reads it, no custom reader)
    DST/train/labels.npy    int64 [N]
    DST/val/images.npy, DST/val/labels.npy

Why one array per split and not tar shards (WebDataset style): the training path draws batches from
(seed, epoch, batch) keys over random rows (``batches.EpochBatchSampler``), which is what makes resume and DDP shards
exact. A memory map serves any row at any time, so a packed split *is* an ``ImageArrays`` and goes through the same
batched path as CIFAR; tar shards are read in order and would need their own shuffle buffer, with no exact resume.
Rows are stored decoded (centre square resized to S), so a batch costs a page-cache read and no JPEG decode; the price
is disk: 3*S*S bytes per image (192 KiB at S=256), several times the JPEGs.

A pack is atomic: everything is written in a hidden folder beside DST, renamed to DST at the end.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from orchestra.errors import UserError

FORMAT, VERSION = "orchestra-packed", 1
SPLITS = ("train", "val")
CHUNK = 32  # images per worker task: big enough to amortise the pipe, small enough for a steady progress line
Progress = Callable[[str, int, int], None]  # (split, images done, images in the split)


def _pack_hint(root: Path) -> str:
    return f"pack an image folder there with: orchestra data pack SRC {root}"


# ----- reading -------------------------------------------------------------------------------------------------


class MappedImages:
    """uint8 ``[N, C, H, W]`` rows of an ``images.npy`` memory map; indexing returns torch tensors.

    Supports what the batch code does with an images tensor (``images[rows]``, ``images[:n]``, ``.shape``,
    ``len``), reading rows in ascending file order. ``rows`` restricts the view to a subset (a train_limit).
    Pickling keeps only the path, so a spawned DataLoader worker maps the file itself instead of receiving a copy of
    the pixels; a forked worker shares the parent's read-only map (numpy's memmap holds no file offset to share).
    """

    def __init__(self, path: str | Path, rows: np.ndarray | None = None,
                 channel_stats: tuple[list[float], list[float]] | None = None) -> None:
        self.path, self.rows, self.channel_stats = str(path), rows, channel_stats
        self._array: np.ndarray | None = None
        full = self.array.shape
        self.shape = (len(rows) if rows is not None else full[0], *full[1:])

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}

    def subset(self, rows: np.ndarray) -> MappedImages:
        """The images at ``rows`` of this view, as a view of the same file."""
        chosen = np.asarray(rows, dtype=np.int64)
        return MappedImages(self.path, chosen if self.rows is None else self.rows[chosen], self.channel_stats)

    def __getitem__(self, index):
        from orchestra.data.arrays import read_rows

        if isinstance(index, (int, np.integer)):
            return read_rows(self.array, self._file_rows(np.asarray([index])))[0]
        if isinstance(index, slice):
            positions = np.arange(len(self))[index]
        else:
            positions = np.asarray(index.numpy() if hasattr(index, "numpy") else index, dtype=np.int64)
        return read_rows(self.array, self._file_rows(positions))

    def _file_rows(self, positions: np.ndarray) -> np.ndarray:
        positions = np.where(positions < 0, positions + len(self), positions)
        return positions if self.rows is None else self.rows[positions]


def spread_rows(labels: np.ndarray, limit: int | None) -> np.ndarray | None:
    """Rows a limit keeps: the same even stride per class that ``data=imagefolder`` takes from the same folder."""
    from orchestra.data.checks import _quotas

    if limit is None or limit >= len(labels):
        return None
    classes, starts, counts = np.unique(labels, return_index=True, return_counts=True)
    order = np.argsort(starts)  # classes in file order (they are stored grouped, in train's class order)
    quotas = _quotas([int(counts[i]) for i in order], limit)
    rows = [starts[i] + j * counts[i] // quota for i, quota in zip(order, quotas, strict=True) for j in range(quota)]
    return np.asarray(rows, dtype=np.int64)


def folder_problems(root: str | Path) -> tuple[dict[str, Any] | None, list[str]]:
    """A packed folder's meta.json and everything wrong with it (missing, damaged, files not matching the counts);
    torch-free and cheap: only the .npy headers are read."""
    base = Path(str(root)).expanduser()
    if not base.is_dir():
        return None, [f"data.root {base} is not a folder; {_pack_hint(base)} (or point data.root at a packed "
                      f"dataset)"]
    meta_path = base / "meta.json"
    if not meta_path.is_file():
        return None, [f"{base} is not a packed dataset (no meta.json); {_pack_hint(base)}"]
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise ValueError(f"format {meta.get('format')!r} version {meta.get('version')!r}, expected {FORMAT!r} "
                             f"version {VERSION}")
        size, channels, counts = int(meta["size"]), int(meta["channels"]), {s: int(meta["counts"][s]) for s in SPLITS}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return None, [f"{meta_path} is damaged ({err}); pack the dataset again with: orchestra data pack SRC {base}"]
    problems = []
    for split in SPLITS:
        expected = {"images.npy": ((counts[split], channels, size, size), np.uint8),
                    "labels.npy": ((counts[split],), np.int64)}
        for name, (shape, dtype) in expected.items():
            problem = _npy_problem(base / split / name, shape, np.dtype(dtype))
            if problem:
                problems.append(f"{problem}; pack the dataset again with: orchestra data pack SRC {base}")
    return (meta if not problems else None), problems


def _read_header(handle) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) from an open .npy file, which is left at the first data byte."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    return np.lib.format.read_array_header_2_0(handle)


def _npy_problem(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> str | None:
    try:
        with open(path, "rb") as handle:
            found, _, found_dtype = _read_header(handle)
            data_starts = handle.tell()
        length = path.stat().st_size
    except FileNotFoundError:
        return f"{path} is missing"
    except (OSError, ValueError) as err:
        return f"{path} is damaged ({err})"
    if tuple(found) != shape or found_dtype != dtype:
        return f"{path} holds {found_dtype} {tuple(found)} where meta.json says {dtype} {shape}"
    if length < data_starts + int(np.prod(shape)) * dtype.itemsize:
        return f"{path} is truncated ({length} bytes)"
    return None


def read_packed(root: str | Path):
    """(train ``ImageArrays``, val ``ImageArrays``, meta) with memory-mapped images; a UserError naming the folder and
    the fix when it is missing or damaged."""
    import torch

    from orchestra.data.arrays import PackedArrays

    meta, problems = folder_problems(root)
    if problems or meta is None:
        raise UserError("; ".join(problems))
    base = Path(str(root)).expanduser()
    stats = (meta["mean"], meta["std"])
    splits = [PackedArrays(MappedImages(base / split / "images.npy", channel_stats=stats),
                           torch.as_tensor(np.load(base / split / "labels.npy"), dtype=torch.int64))
              for split in SPLITS]
    return splits[0], splits[1], meta


def packed_problems(data: dict) -> list[str]:
    """The pre-run check of a ``data=packed`` section: the folder, and the keys that must agree with its meta.json."""
    root = data.get("root")
    if root is None or root == "???":
        return ["data.root is required for data=packed; set data.root=<folder written by orchestra data pack> "
                "(make one with: orchestra data pack SRC DST)"]
    meta, problems = folder_problems(root)
    if meta is None:
        return problems
    classes, size = len(meta["classes"]), meta["size"]
    num_classes, channels, image_size = data.get("num_classes"), data.get("channels"), data.get("image_size")
    if num_classes is None or num_classes == "???":
        problems.append(f"data.num_classes is not set; {root} holds {classes} classes: set data.num_classes={classes}")
    elif num_classes != classes:
        problems.append(f"data.num_classes={num_classes!r} but {root} holds {classes} classes (meta.json); "
                        f"set data.num_classes={classes}")
    if isinstance(channels, int) and channels != meta["channels"]:
        problems.append(f"data.channels={channels} but {root} holds {meta['channels']}-channel images; "
                        f"set data.channels={meta['channels']}")
    if isinstance(image_size, int) and not isinstance(image_size, bool) and image_size > size:
        problems.append(f"data.image_size={image_size} is larger than the packed images ({size} px) in {root}; "
                        f"set data.image_size={size} or less, or pack again with --size {image_size}")
    return problems


def packed_sizes(root: str | Path) -> tuple[int, int] | None:
    meta, problems = folder_problems(root)
    return None if meta is None else (meta["counts"]["train"], meta["counts"]["val"])


# ----- packing -------------------------------------------------------------------------------------------------


def _decode_chunk(task: tuple[list[str], int]) -> tuple[np.ndarray, list[tuple[int, str]], list[int], list[int]]:
    """Decode one chunk: (good images uint8 [k, 3, S, S], [(position, reason)] of the bad ones, channel sums, channel
    sums of squares). Exact integer sums, so the statistics do not depend on how the work was chunked."""
    import torch

    from orchestra.data.decode import FIX, decode_resized

    paths, size = task
    good, bad = [], []
    for position, path in enumerate(paths):
        try:
            good.append(np.asarray(decode_resized(path, size)))
        except (UserError, OSError) as err:
            bad.append((position, str(err).removesuffix(f"; {FIX}")))
    images = np.stack(good) if good else np.empty((0, 3, size, size), dtype=np.uint8)
    # a histogram per channel gives both sums exactly and costs a fraction of the decoding (torch's bincount reads
    # uint8 as it is; numpy's converts every pixel to int64 first)
    channels = torch.from_numpy(images).transpose(0, 1).reshape(3, -1)
    values = torch.arange(256, dtype=torch.int64)
    counts = [torch.bincount(channels[c], minlength=256) for c in range(3)]
    return images, bad, [int(n @ values) for n in counts], [int(n @ (values * values)) for n in counts]


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)  # the processes are the parallelism; threads on top only contend for the same cores


def _chunks(paths: Sequence[str], size: int) -> list[tuple[list[str], int]]:
    return [(list(paths[i:i + CHUNK]), size) for i in range(0, len(paths), CHUNK)]


def _shrink_rows(path: Path, rows: int) -> None:
    """Cut an .npy file to its first ``rows`` rows in place: numpy pads the header so that the row count can change
    without moving the data (the padding is there for appending), so the header is rewritten and the file truncated."""
    with open(path, "r+b") as handle:
        version = np.lib.format.read_magic(handle)
        handle.seek(0)
        shape, fortran, dtype = _read_header(handle)
        data_starts = handle.tell()
        header = io.BytesIO()
        write = np.lib.format.write_array_header_1_0 if version == (1, 0) else np.lib.format.write_array_header_2_0
        write(header, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran,
                       "shape": (rows, *shape[1:])})
        if len(header.getvalue()) != data_starts:
            raise RuntimeError(f"the .npy header of {path} changed length; cannot shrink it in place")
        handle.seek(0)
        handle.write(header.getvalue())
        handle.truncate(data_starts + rows * int(np.prod(shape[1:])) * dtype.itemsize)


def _pack_split(split: str, rows: list[tuple[str, int]], folder: Path, size: int, skip_bad_images: bool,
                pool, progress: Progress | None) -> tuple[int, list[dict[str, str]], list[int], list[int]]:
    """Decode ``rows`` into folder/images.npy and folder/labels.npy in dataset order; (kept, skipped, sums, squares)."""
    folder.mkdir()
    paths = [path for path, _ in rows]
    images = np.lib.format.open_memmap(folder / "images.npy", mode="w+", dtype=np.uint8,
                                       shape=(len(rows), 3, size, size))
    tasks = _chunks(paths, size)
    results = pool.imap(_decode_chunk, tasks) if pool is not None else map(_decode_chunk, tasks)
    kept, done, keep_labels, skipped = 0, 0, [], []
    sums, squares = [0, 0, 0], [0, 0, 0]
    for (chunk, _), (decoded, bad, chunk_sums, chunk_squares) in zip(tasks, results, strict=True):
        if bad and not skip_bad_images:
            position, reason = bad[0]
            more = f" ({len(bad) - 1} more in the same chunk)" if len(bad) > 1 else ""
            raise UserError(f"{reason}{more}; replace or delete the file, or pack with --skip-bad-images to leave "
                            f"unreadable files out (they are listed in meta.json)")
        bad_positions = {position for position, _ in bad}
        skipped += [{"split": split, "path": chunk[p], "error": reason} for p, reason in bad]
        images[kept:kept + len(decoded)] = decoded
        keep_labels += [rows[done + i][1] for i in range(len(chunk)) if i not in bad_positions]
        kept += len(decoded)
        done += len(chunk)
        sums = [a + b for a, b in zip(sums, chunk_sums, strict=True)]
        squares = [a + b for a, b in zip(squares, chunk_squares, strict=True)]
        if progress is not None:
            progress(split, done, len(rows))
    images.flush()
    del images
    if kept < len(rows):
        _shrink_rows(folder / "images.npy", kept)
    np.save(folder / "labels.npy", np.asarray(keep_labels, dtype=np.int64))
    return kept, skipped, sums, squares


def _channel_stats(sums: list[int], squares: list[int], pixels: int) -> tuple[list[float], list[float]]:
    """Mean and (sample) standard deviation per channel of the pixel values scaled to [0, 1]."""
    mean = [s / pixels / 255 for s in sums]
    var = [(q / 255**2 - pixels * m * m) / max(1, pixels - 1) for q, m in zip(squares, mean, strict=True)]
    return mean, [max(v, 0.0) ** 0.5 for v in var]


def pack_folder(src: str | Path, dst: str | Path, size: int = 256, skip_bad_images: bool = False,
                workers: int | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Decode the image folder ``src`` (train/<class>/*, val/<class>/*) into the packed dataset ``dst``; its meta.

    Labels follow train's class folders exactly as ``data=imagefolder`` reads them (``checks.read_folders``). An
    unreadable image stops the pack with one line naming it, unless ``skip_bad_images`` (then it is left out, and
    listed in meta.json's ``skipped``). ``workers`` decoding processes (default: the CPUs this process may use).
    """
    from orchestra.data.checks import read_folders

    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UserError(f"--size must be a positive number of pixels, got {size!r}; e.g. --size 256")
    source, target = Path(src).expanduser().resolve(), Path(dst).expanduser().resolve()
    folders = read_folders(str(source))
    if folders.problems:
        raise UserError("; ".join(p.replace("data.root", "SRC") for p in folders.problems))
    if target.exists():
        raise UserError(f"{target} already exists; remove it or choose another destination")
    workers = workers or len(os.sched_getaffinity(0))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / f".{target.name}.partial-{os.getpid()}"
    started = time.monotonic()
    pool = None
    try:
        partial.mkdir()
        if workers > 1 and len(folders.train) + len(folders.val) > CHUNK:
            import multiprocessing

            import orchestra.data.decode  # noqa: F401  imported once here: forked workers inherit torch, loaded

            pool = multiprocessing.get_context("fork").Pool(workers, initializer=_one_thread)
        counts, skipped = {}, []
        for split in SPLITS:
            kept, bad, sums, squares = _pack_split(split, getattr(folders, split), partial / split, size,
                                                   skip_bad_images, pool, progress)
            counts[split], skipped = kept, skipped + bad
            if split == "train":
                mean, std = _channel_stats(sums, squares, max(1, kept) * size * size)
        meta = {"format": FORMAT, "version": VERSION, "size": size, "channels": 3, "classes": list(folders.classes),
                "counts": counts, "mean": mean, "std": std, "source": str(source), "skipped": skipped,
                "bytes": sum(f.stat().st_size for f in partial.rglob("*.npy")),
                "seconds": round(time.monotonic() - started, 3),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (partial / "meta.json").write_text(json.dumps(meta, indent=1))
        for bad in skipped:
            warnings.warn(f"left out {bad['path']} ({bad['error']})", UserWarning, stacklevel=2)
        os.rename(partial, target)  # the one step that makes DST exist: a pack that stops earlier leaves none
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return meta
