"""In-memory image datasets as uint8 tensors: the shipped MNIST subset and torchvision's array datasets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from orchestra.errors import UserError

EMBEDDED = Path(__file__).with_name("mnist10k.npz")
ARRAY_DATASETS = ("mnist10k", "mnist", "fashion_mnist", "cifar10", "cifar100")


@dataclass
class ImageArrays:
    """Images as uint8 ``[N, C, H, W]`` with int64 labels ``[N]``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, limit: int | None) -> ImageArrays:
        return self if limit is None else ImageArrays(self.images[:limit], self.labels[:limit])

    def take(self, rows: torch.Tensor) -> torch.Tensor:
        """uint8 images at ``rows``, in that order, as a tensor (a memory map is read in ascending row order)."""
        if isinstance(self.images, np.ndarray):
            return read_rows(self.images, rows)
        return self.images[rows]


def read_rows(array: np.ndarray, rows) -> torch.Tensor:
    """Rows of a (memory-mapped) array as a tensor, read in ascending order (fewer seeks), in the order asked."""
    wanted = np.asarray(rows.numpy() if isinstance(rows, torch.Tensor) else rows, dtype=np.int64)
    order = np.argsort(wanted, kind="stable")
    out = np.empty((len(wanted), *array.shape[1:]), dtype=array.dtype)
    out[order] = array[wanted[order]]
    return torch.from_numpy(out)


@dataclass
class PackedArrays(ImageArrays):
    """A split of a packed dataset (``orchestra.data.packed``): ``images`` is a ``MappedImages`` memory map."""

    def head(self, limit: int | None) -> ImageArrays:
        # rows are stored grouped by class: keep the per-class spread data=imagefolder takes, not the first classes
        from orchestra.data.packed import spread_rows

        rows = spread_rows(self.labels.numpy(), limit)
        if rows is None:
            return self
        return PackedArrays(self.images.subset(rows), self.labels[torch.from_numpy(rows)])


def _as_nchw(array: np.ndarray) -> torch.Tensor:
    tensor = torch.as_tensor(np.ascontiguousarray(array), dtype=torch.uint8)
    if tensor.ndim == 3:
        return tensor.unsqueeze(1)
    return tensor.permute(0, 3, 1, 2).contiguous()  # NHWC (CIFAR) -> NCHW


def load_embedded() -> tuple[ImageArrays, ImageArrays]:
    with np.load(EMBEDDED) as npz:
        train = ImageArrays(_as_nchw(npz["x_train"]), torch.as_tensor(npz["y_train"], dtype=torch.int64))
        test = ImageArrays(_as_nchw(npz["x_test"]), torch.as_tensor(npz["y_test"], dtype=torch.int64))
    return train, test


def load_torchvision(name: str, root: str | None, download: bool) -> tuple[ImageArrays, ImageArrays]:
    import torchvision

    if root is None:
        raise UserError(f"data={name} needs a dataset folder; set data.root=/path/to/{name} (add data.download=true)")
    root_path = Path(root).expanduser()
    if not download and not root_path.exists():
        raise UserError(f"data.root {root_path} does not exist; point data.root at it or add data.download=true")
    cls = {
        "mnist": torchvision.datasets.MNIST,
        "fashion_mnist": torchvision.datasets.FashionMNIST,
        "cifar10": torchvision.datasets.CIFAR10,
        "cifar100": torchvision.datasets.CIFAR100,
    }[name]
    splits = []
    for train in (True, False):
        try:
            ds = cls(str(root_path), train=train, download=download)
        except RuntimeError as err:  # torchvision's "Dataset not found or corrupted"
            raise UserError(f"{name} not found under {root_path} ({err}); add data.download=true") from None
        data = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
        splits.append(ImageArrays(_as_nchw(data), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)))
    return splits[0], splits[1]


def load_fashion(root: str | None, download: bool) -> tuple[ImageArrays, ImageArrays]:
    """Fashion-MNIST from its IDX files: under data.root when set, else Debian's dataset-fashion-mnist package."""
    from orchestra.data import idx

    if idx.fashion_folder(root) is None and download and root is not None:
        return load_torchvision("fashion_mnist", root, download)  # fetched once into root, torchvision's layout
    files = idx.fashion_files(root)
    splits = []
    for split in ("train", "test"):
        images, labels = idx.load_split(*files[split])
        splits.append(ImageArrays(_as_nchw(images), torch.as_tensor(labels, dtype=torch.int64)))
    return splits[0], splits[1]


def load_arrays(name: str, root: str | None = None, download: bool = False) -> tuple[ImageArrays, ImageArrays]:
    """Train and test splits of a named in-memory dataset."""
    if name == "mnist10k":
        return load_embedded()
    if name == "fashion_mnist":
        return load_fashion(root, download)
    if name in ARRAY_DATASETS:
        return load_torchvision(name, root, download)
    if name == "packed":  # an image folder packed by `orchestra data pack`: memory-mapped, read row by row
        from orchestra.data.packed import read_packed

        if root is None:
            raise UserError("data=packed needs data.root=<folder written by orchestra data pack SRC DST>")
        train, val, _ = read_packed(root)
        return train, val
    raise UserError(f"unknown dataset '{name}'; known: {', '.join(ARRAY_DATASETS)}, packed, imagefolder")
