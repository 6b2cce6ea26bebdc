"""IDX files (the MNIST family's format), gzipped or not, read with numpy; and where Fashion-MNIST's live.

An IDX file is a 4-byte magic (two zero bytes, a type code, the number of dimensions), one big-endian uint32 per
dimension, then the values. Only unsigned bytes (type 0x08) occur in the datasets we read. Debian's
``dataset-fashion-mnist`` installs the four files gzipped under ``/usr/share/datasets/fashion-mnist/``;
torchvision keeps them un-gzipped under ``ROOT/FashionMNIST/raw/``. Nothing here imports torch (numpy only inside
the reader), so the pre-run data check can read the sizes from the headers without loading a single image.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from orchestra.errors import UserError

if TYPE_CHECKING:
    import numpy as np

UBYTE = 0x08
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = "apt-get install dataset-fashion-mnist"
# split -> (images file, labels file), without the .gz
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _header(handle, path: Path, dims: int) -> tuple[int, ...]:
    head = handle.read(4)
    if len(head) < 4 or head[:2] != b"\0\0" or head[2] != UBYTE or head[3] != dims:
        raise UserError(f"{path} is not an IDX file of unsigned bytes with {dims} dimension(s) (magic "
                        f"{head.hex() or 'missing'}, wanted 0000080{dims}); replace it, e.g. reinstall with "
                        f"{INSTALL_HINT}")
    raw = handle.read(4 * dims)
    if len(raw) < 4 * dims:
        raise UserError(f"{path} ends inside its IDX header; replace it, e.g. reinstall with {INSTALL_HINT}")
    return struct.unpack(f">{dims}I", raw)


def idx_shape(path: Path | str, dims: int) -> tuple[int, ...]:
    """The shape an IDX file's header declares (reads 4 + 4 * dims bytes; gzip decompresses only those)."""
    path = Path(path)
    try:
        with _open(path) as handle:
            return _header(handle, path, dims)
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise UserError(f"{path} cannot be read as IDX ({err}); replace it, e.g. reinstall with {INSTALL_HINT}"
                        ) from None


def read_idx(path: Path | str, dims: int) -> np.ndarray:
    """The values of an IDX file of unsigned bytes as a uint8 array of the header's shape; one line when not."""
    import numpy as np  # here: the pre-run check reads headers only and need not pay for numpy

    path = Path(path)
    try:
        with _open(path) as handle:
            shape = _header(handle, path, dims)
            data = handle.read()
    except (OSError, EOFError) as err:
        raise UserError(f"{path} cannot be read as IDX ({err}); replace it, e.g. reinstall with {INSTALL_HINT}"
                        ) from None
    expected = int(np.prod(shape))
    if len(data) != expected:
        raise UserError(f"{path} holds {len(data)} values but its header declares {'x'.join(map(str, shape))} = "
                        f"{expected}; the file is cut short or damaged: replace it, e.g. reinstall with "
                        f"{INSTALL_HINT}")
    return np.frombuffer(bytearray(data), dtype=np.uint8).reshape(shape)  # writable: torch wants to own it


def _split_files(folder: Path, split: str) -> tuple[Path, Path] | None:
    """The split's two files in ``folder``, gzipped or not; None unless both are there."""
    found = []
    for name in FILES[split]:
        candidates = [folder / name, folder / f"{name}.gz"]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            return None
        found.append(hit)
    return found[0], found[1]


def fashion_folder(root: str | None) -> Path | None:
    """The folder holding Fashion-MNIST's four IDX files: under ``root`` (itself, or torchvision's
    ``FashionMNIST/raw``) when a root is given, else Debian's package folder; None when they are not there."""
    if root is not None:
        base = Path(str(root)).expanduser()
        candidates = [base, base / "FashionMNIST" / "raw"]
    else:
        candidates = [DEBIAN_FASHION]
    for folder in candidates:
        if all(_split_files(folder, split) for split in FILES):
            return folder
    return None


def missing_fashion(root: str | None) -> str:
    """The one line for a Fashion-MNIST that is nowhere to be found."""
    if root is not None:
        return (f"data.root {Path(str(root)).expanduser()} holds no Fashion-MNIST IDX files (train-images-idx3-ubyte"
                f"[.gz] and the three others, directly or under FashionMNIST/raw/); point data.root at them, or set "
                f"data.root=null to read {DEBIAN_FASHION} ({INSTALL_HINT})")
    return (f"Fashion-MNIST is not installed: {DEBIAN_FASHION} has no IDX files; run {INSTALL_HINT} "
            f"(launch/cluster/install.sh does), or set data.root=/path/to/the/idx/files")


def fashion_files(root: str | None) -> dict[str, tuple[Path, Path]]:
    """split -> (images, labels) paths; UserError naming the package and data.root when they are not there."""
    folder = fashion_folder(root)
    if folder is None:
        raise UserError(missing_fashion(root))
    return {split: _split_files(folder, split) for split in FILES}  # type: ignore[misc]


def fashion_sizes(root: str | None) -> tuple[int, int]:
    """(train, test) image counts from the label files' headers; nothing else is read."""
    files = fashion_files(root)
    return idx_shape(files["train"][1], 1)[0], idx_shape(files["test"][1], 1)[0]


def load_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``[N, H, W]`` uint8 images and ``[N]`` uint8 labels of one split; the two files must agree on N."""
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
    if len(images) != len(labels):
        raise UserError(f"{images_path} holds {len(images)} images but {labels_path} {len(labels)} labels; the "
                        f"files belong to different sets: replace them, e.g. reinstall with {INSTALL_HINT}")
    return images, labels
