"""Checks of the ``data`` config section before a run: every problem at once, one line each, naming key and fix.

The sweep's validation step calls ``data_problems`` and ``dataset_sizes`` on each member's config before any job
directory exists, so nothing here imports torch or loads a whole dataset. The image-folder index (which files, which
labels) lives here too: the checks and ``imagefolder.FolderBatches`` must agree on it, and the index needs no torch.
"""

from __future__ import annotations

import functools
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EMBEDDED = Path(__file__).with_name("mnist10k.npz")
MISSING = "???"  # OmegaConf's mark for a mandatory value nobody set
DEFAULT_VERIFY_IMAGES = 20_000
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif")

# channels, classes, (train, test) sizes and a file torchvision writes, for the built-in array datasets
BUILT_IN: dict[str, tuple[int, int, tuple[int, int] | None, str | None]] = {
    "mnist10k": (1, 10, None, None),  # sizes read from the shipped npz
    "mnist": (1, 10, (60_000, 10_000), "MNIST/raw/train-images-idx3-ubyte"),
    "fashion_mnist": (1, 10, None, None),  # sizes read from the IDX headers (data.root or Debian's package)
    "cifar10": (3, 10, (50_000, 10_000), "cifar-10-batches-py/data_batch_1"),
    "cifar100": (3, 100, (50_000, 10_000), "cifar-100-python/train"),
}
DATASETS = (*BUILT_IN, "imagefolder", "packed")


def _unset(value: Any) -> bool:
    return value is None or value == MISSING


def _count_problem(data: dict, key: str, minimum: int, nullable: bool, what: str) -> str | None:
    value = data.get(key)
    if nullable and value is None:
        return None
    if value == MISSING or (value is None and not nullable):
        return f"data.{key} is required; set data.{key}=<{what}>"
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        null = " or null" if nullable else ""
        return f"data.{key} must be a {what}{null}, got {value!r}; set data.{key}=<{what}>{null}"
    return None


def _key_problems(data: dict) -> list[str]:
    """Types and ranges of the keys every dataset shares; a value that is wrong here is not used further."""
    specs = [("batch_size", 1, False, "positive integer"), ("eval_batch_size", 1, False, "positive integer"),
             ("views", 1, False, "positive integer"), ("num_workers", 0, False, "non-negative integer or auto"),
             ("image_size", 1, True, "positive integer"), ("channels", 1, False, "positive integer"),
             ("train_limit", 1, True, "positive integer"), ("val_limit", 1, True, "positive integer"),
             ("local_views", 0, False, "non-negative integer"), ("local_size", 1, True, "positive integer")]
    specs += [("prefetch", 1, True, "positive integer"), ("decode_size", 1, True, "positive integer")]
    problems = [_count_problem(data, key, low, nullable, what) for key, low, nullable, what in specs
                if key in data and not (key == "num_workers" and data[key] == "auto")]
    if "skip_bad_images" in data and not isinstance(data["skip_bad_images"], bool):
        problems.append(f"data.skip_bad_images must be true or false, got {data['skip_bad_images']!r}")
    problems += [_scale_problem(data, key) for key in ("global_crop_scale", "local_crop_scale")]
    if data.get("dataset") == "imagefolder" or "verify_images" in data:
        verify = data.get("verify_images", DEFAULT_VERIFY_IMAGES)
        if verify is not False:  # false turns the check off, like 0
            problems.append(_count_problem({"verify_images": verify}, "verify_images", 0, True,
                                           "non-negative integer (0 turns the header check off)"))
    return [p for p in problems if p]


def _scale_problem(data: dict, key: str) -> str | None:
    """A crop scale is null (the preset's) or [low, high] area fractions, 0 < low <= high (above 1 zooms out)."""
    value = data.get(key)
    if value is None:
        return None
    pair = list(value) if isinstance(value, (list, tuple)) else None
    numbers = pair is not None and len(pair) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair)
    if not numbers or not 0 < pair[0] <= pair[1]:
        return (f"data.{key} must be [low, high] area fractions with 0 < low <= high, or null for the augment "
                f"preset's; got {value!r}; e.g. set data.{key}=[0.05,0.4]")
    return None


def _limit(data: dict, key: str) -> int | None:
    value = data.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def data_problems(data: dict) -> list[str]:
    """Every problem with the ``data`` config section, one complete line each naming the key and the fix."""
    if not isinstance(data, dict):
        return [f"the data config section must be a mapping, got {data!r}; choose one with data=<name>"]
    dataset = data.get("dataset")
    if dataset not in DATASETS:
        return [f"data.dataset {dataset!r} is unknown; known: {', '.join(DATASETS)}"]
    problems = _key_problems(data)
    try:
        if dataset == "imagefolder":
            problems += _imagefolder_problems(data)
        elif dataset == "packed":
            from orchestra.data.packed import packed_problems  # numpy, not torch

            problems += packed_problems(data)
        else:
            problems += _built_in_problems(dataset, data)
    except OSError as err:  # an unreadable disk is the user's to fix too, never a traceback from a check
        problems.append(f"data.root cannot be read ({err}); check the path and its permissions")
    return problems


def dataset_sizes(data: dict) -> tuple[int, int] | None:
    """(training images, validation images) after train_limit/val_limit, or None when that needs a download."""
    try:
        sizes = _raw_sizes(data)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return None
    if sizes is None:
        return None
    train_limit, val_limit = _limit(data, "train_limit"), _limit(data, "val_limit")
    return (min(sizes[0], train_limit or sizes[0]), min(sizes[1], val_limit or sizes[1]))


def _raw_sizes(data: dict) -> tuple[int, int] | None:
    if not isinstance(data, dict):
        return None
    dataset = data.get("dataset")
    if dataset == "mnist10k":
        return _npz_lengths(str(EMBEDDED), EMBEDDED.stat().st_mtime_ns)
    if dataset == "fashion_mnist":
        from orchestra.data.idx import fashion_folder, fashion_sizes
        from orchestra.errors import UserError

        root = None if _unset(data.get("root")) else str(data["root"])
        try:
            return fashion_sizes(root) if fashion_folder(root) is not None else None
        except UserError:  # a damaged header: data_problems says so
            return None
    if dataset == "packed":
        from orchestra.data.packed import packed_sizes

        return None if _unset(data.get("root")) else packed_sizes(data["root"])
    if dataset == "imagefolder":
        if _unset(data.get("root")):
            return None
        folders = read_folders(data["root"], _limit(data, "train_limit"), _limit(data, "val_limit"))
        return None if folders.problems else (len(folders.train), len(folders.val))
    if dataset in BUILT_IN and not _unset(data.get("root")):
        _, _, sizes, marker = BUILT_IN[dataset]
        if marker and (Path(str(data["root"])).expanduser() / marker).exists():
            return sizes
    return None


@functools.lru_cache(maxsize=8)
def _npz_lengths(path: str, _mtime_ns: int) -> tuple[int, int]:
    """Row counts from the .npy headers inside the npz: no array is read."""
    import numpy as np  # here, not at the top: a 100-member dry run validates without paying for numpy

    with zipfile.ZipFile(path) as archive:
        rows = []
        for member in ("y_train.npy", "y_test.npy"):
            with archive.open(member) as handle:
                version = np.lib.format.read_magic(handle)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                rows.append(read_header(handle)[0][0])
    return rows[0], rows[1]


def _built_in_problems(dataset: str, data: dict) -> list[str]:
    channels, classes, _, marker = BUILT_IN[dataset]
    problems = []
    for key, truth in (("channels", channels), ("num_classes", classes)):
        value = data.get(key)
        if _unset(value):
            problems.append(f"data.{key} is required; {dataset} has {truth}: set data.{key}={truth}")
        elif value != truth:
            problems.append(f"data.{key}={value!r} but {dataset} has {truth}; set data.{key}={truth}")
    if dataset == "fashion_mnist":
        return problems + _fashion_problems(data)
    if marker is None:
        return problems
    root = data.get("root")
    if _unset(root):
        return [*problems, f"data.root is required for data={dataset}; set data.root=/path/to/{dataset} "
                           f"(add data.download=true to fetch it once)"]
    path = Path(str(root)).expanduser()
    if not data.get("download") and not (path / marker).exists():
        problems.append(f"data.root {path} holds no {dataset} (no {marker}); point data.root at the folder "
                        f"that does, or add data.download=true to fetch it there")
    return problems


def _fashion_problems(data: dict) -> list[str]:
    """Fashion-MNIST needs no root (Debian's dataset-fashion-mnist); when the files are found their headers must
    be IDX headers, read here without loading the images."""
    from orchestra.data.idx import fashion_folder, fashion_sizes, missing_fashion
    from orchestra.errors import UserError

    root = None if _unset(data.get("root")) else str(data["root"])
    if fashion_folder(root) is None:
        return [] if data.get("download") and root is not None else [missing_fashion(root)]
    try:
        fashion_sizes(root)
    except UserError as err:
        return [str(err)]
    return []


# ----- image folders: root/train/<class>/*, root/val/<class>/* -------------------------------------------------


@dataclass(frozen=True)
class Folders:
    """The images one imagefolder run uses: ``(path, label)`` rows, labels from train's sorted class folders."""

    classes: tuple[str, ...]
    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    problems: list[str]


def _is_image(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _scan(split: Path) -> tuple[dict[str, list[str]], int]:
    """Image files per class folder (sorted, nested folders included) and the images lying outside any class."""
    with os.scandir(split) as entries:
        entries = sorted(entries, key=lambda e: e.name)
    classes: dict[str, list[str]] = {}
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir():  # .ipynb_checkpoints and the like are not classes
            continue
        files: list[str] = []
        for folder, subfolders, names in os.walk(entry.path, followlinks=True):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
            files += [os.path.join(folder, n) for n in sorted(names) if _is_image(n)]
        classes[entry.name] = files
    loose = sum(1 for e in entries if e.is_file() and _is_image(e.name))
    return classes, loose


def _quotas(counts: list[int], limit: int | None) -> list[int]:
    """Images per class for a limit: as even as the classes allow, so every class stays in when limit >= classes."""
    if limit is None or limit >= sum(counts):
        return list(counts)
    low, high = 0, max(counts)
    while low < high:  # the largest level t with sum(min(n, t)) <= limit
        mid = (low + high + 1) // 2
        if sum(min(n, mid) for n in counts) <= limit:
            low = mid
        else:
            high = mid - 1
    quotas = [min(n, low) for n in counts]
    extra = limit - sum(quotas)
    for c, n in enumerate(counts):
        if extra and n > low:
            quotas[c], extra = quotas[c] + 1, extra - 1
    return quotas


def _rows(classes: dict[str, list[str]], labels: dict[str, int], limit: int | None) -> list[tuple[str, int]]:
    names = [c for c in classes if c in labels]
    quotas = _quotas([len(classes[c]) for c in names], limit)
    rows = []
    for name, quota in zip(names, quotas, strict=True):
        files = classes[name]
        # an even stride over the sorted files: a deterministic spread, not the first names alphabetically
        rows += [(files[i * len(files) // quota], labels[name]) for i in range(quota)]
    return rows


def _split_problems(split: Path, classes: dict[str, list[str]], loose: int) -> list[str]:
    if not classes:
        where = f" (its {loose} images lie directly in it)" if loose else ""
        return [f"{split} has no class folders{where}; data.root must hold {split.name}/<class>/<images>"]
    empty = [c for c, files in classes.items() if not files]
    if not empty:
        return []
    shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
    return [f"class folders without images in {split}: {shown}; add images ({', '.join(IMAGE_EXTENSIONS[:4])}, "
            f"...) or remove those folders (an empty class would be a label no image has)"]


def read_folders(root: str, train_limit: int | None = None, val_limit: int | None = None) -> Folders:
    """Index ``root/train`` and ``root/val``; val's labels follow train's classes. Problems are listed, not raised."""
    base = Path(str(root)).expanduser()
    if not base.is_dir():
        return Folders((), [], [], [f"data.root {base} is not a folder; point data.root at the folder holding "
                                    f"train/<class>/ and val/<class>/"])
    scans, problems = {}, []
    for name in ("train", "val"):
        if not (base / name).is_dir():
            problems.append(f"data.root {base} has no {name}/ folder; it must hold train/<class>/ and val/<class>/")
            continue
        scans[name] = _scan(base / name)
        problems += _split_problems(base / name, *scans[name])
    train_classes = list(scans["train"][0]) if "train" in scans else []
    labels = {name: index for index, name in enumerate(train_classes)}
    if "train" in scans and "val" in scans:
        unknown = [c for c in scans["val"][0] if c not in labels]
        if unknown and train_classes:
            problems.append(f"{base / 'val'} has class folders that {base / 'train'} lacks: "
                            f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}; labels follow train's "
                            f"class folders, so add them to train/ or remove them from val/")
    train = _rows(scans["train"][0], labels, train_limit) if "train" in scans else []
    val = _rows(scans["val"][0], labels, val_limit) if "val" in scans else []
    return Folders(tuple(train_classes), train, val, problems)


_HEADER_OK: dict[tuple[str, int, int], bool] = {}  # (path, mtime_ns, size): every member of a sweep checks the same


def unreadable_images(paths: list[str]) -> list[str]:
    """Files whose header PIL cannot read (cheap: Image.open parses the header and decodes no pixels)."""
    from PIL import Image

    bad = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            bad.append(path)
            continue
        key = (path, stat.st_mtime_ns, stat.st_size)
        if key not in _HEADER_OK:
            try:
                with Image.open(path):
                    _HEADER_OK[key] = True
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
                _HEADER_OK[key] = False
        if not _HEADER_OK[key]:
            bad.append(path)
    return bad


def _imagefolder_problems(data: dict) -> list[str]:
    return inspect_imagefolder(data)[1]


def inspect_imagefolder(data: dict, verify_headers: bool = True) -> tuple[Folders | None, list[str]]:
    """The folders an imagefolder config names, and every problem with them and with the keys that describe them."""
    problems = []
    root, num_classes, channels = data.get("root"), data.get("num_classes"), data.get("channels")
    if isinstance(channels, int) and not isinstance(channels, bool) and channels != 3:
        problems.append(f"data.channels={channels} but data=imagefolder loads RGB images; set data.channels=3")
    bad_classes = not _unset(num_classes) and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                               or num_classes < 1)
    if bad_classes:
        problems.append(f"data.num_classes must be a positive integer, got {num_classes!r}; set it to the number "
                        f"of class folders in data.root/train")
    if _unset(root):
        problems.append("data.root is required for data=imagefolder; set data.root=/path/holding/train_and_val "
                        "(train/<class>/<images> and val/<class>/<images>)")
        if _unset(num_classes):
            problems.append("data.num_classes is required for data=imagefolder; set data.num_classes=<number of "
                            "class folders in data.root/train>")
        return None, problems
    folders = read_folders(root, _limit(data, "train_limit"), _limit(data, "val_limit"))
    problems += folders.problems
    found, train = len(folders.classes), Path(str(root)).expanduser() / "train"
    if found and _unset(num_classes):
        problems.append(f"data.num_classes is not set; {train} holds {found} class folders: "
                        f"set data.num_classes={found}")
    elif found and not bad_classes and num_classes != found:
        problems.append(f"data.num_classes={num_classes} but {train} holds {found} class folders; "
                        f"set data.num_classes={found} (or fix the folders)")
    if verify_headers:
        problems += _header_problems(data, folders)
    return folders, problems


def _header_problems(data: dict, folders: Folders) -> list[str]:
    verify = data.get("verify_images", DEFAULT_VERIFY_IMAGES)
    paths = [path for path, _ in folders.train + folders.val]
    if verify is False or not isinstance(verify, int) or len(paths) > verify:
        return []  # a bad value is reported by _key_problems; past the limit images are checked as they load
    bad = unreadable_images(sorted(set(paths)))
    if not bad:
        return []
    shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    return [f"{len(bad)} file(s) under data.root are not readable images: {shown}; replace or delete them "
            f"(data.verify_images={verify} checks headers of up to that many files before a run)"]
