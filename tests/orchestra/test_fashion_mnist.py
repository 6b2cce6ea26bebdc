"""Fashion-MNIST without network: the IDX reader against Debian's dataset-fashion-mnist files, IDX files that are
not what they claim (one line each), data.root in torchvision's layout, the pre-run check, and one real epoch of
``orchestra train data=fashion_mnist`` read from the package path.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from orchestra_testkit import SMALL_HEADS, only_job_dir, read_json, run_cli

from orchestra.data import idx
from orchestra.data.arrays import load_arrays
from orchestra.data.checks import data_problems, dataset_sizes
from orchestra.errors import UserError

INSTALLED = all((idx.DEBIAN_FASHION / f"{name}.gz").is_file() for pair in idx.FILES.values() for name in pair)
needs_package = pytest.mark.skipif(
    not INSTALLED, reason=f"SKIPPED: Debian's Fashion-MNIST is NOT INSTALLED ({idx.DEBIAN_FASHION} lacks the IDX "
                          f"files); run `apt-get install dataset-fashion-mnist` (launch/cluster/install.sh does) to "
                          f"test the real data")
# The first labels of each split as published (train: ankle boot, T-shirt, T-shirt, dress, ...).
FIRST_TRAIN = [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
FIRST_TEST = [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]


def write_idx(path: Path, array: np.ndarray, magic: bytes | None = None, gz: bool = False) -> Path:
    header = magic if magic is not None else bytes([0, 0, 0x08, array.ndim])
    payload = header + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)
    return path


def small_set(folder: Path, train: int = 30, test: int = 12, gz: bool = False) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {"train_x": rng.integers(0, 256, (train, 28, 28)), "train_y": np.arange(train) % 10,
              "test_x": rng.integers(0, 256, (test, 28, 28)), "test_y": (np.arange(test) * 3) % 10}
    suffix = ".gz" if gz else ""
    for split, key in (("train", "train"), ("test", "test")):
        images, labels = idx.FILES[split]
        write_idx(folder / f"{images}{suffix}", arrays[f"{key}_x"], gz=gz)
        write_idx(folder / f"{labels}{suffix}", arrays[f"{key}_y"], gz=gz)
    return arrays


@needs_package
def test_debian_files_read_as_published():
    files = idx.fashion_files(None)
    assert files["train"][0] == idx.DEBIAN_FASHION / "train-images-idx3-ubyte.gz"
    train_x, train_y = idx.load_split(*files["train"])
    test_x, test_y = idx.load_split(*files["test"])
    assert train_x.shape == (60_000, 28, 28) and test_x.shape == (10_000, 28, 28)
    assert train_x.dtype == np.uint8 and train_y.dtype == np.uint8
    assert np.bincount(train_y).tolist() == [6000] * 10 and np.bincount(test_y).tolist() == [1000] * 10
    assert train_y[:10].tolist() == FIRST_TRAIN and test_y[:10].tolist() == FIRST_TEST
    assert train_x.max() == 255 and train_x.min() == 0 and 60 < train_x.mean() < 80  # mostly dark background
    assert idx.fashion_sizes(None) == (60_000, 10_000)


@needs_package
def test_load_arrays_and_the_pre_run_check_find_the_package_without_a_root():
    train, test = load_arrays("fashion_mnist")
    assert tuple(train.images.shape) == (60_000, 1, 28, 28) and tuple(test.images.shape) == (10_000, 1, 28, 28)
    assert train.labels.dtype == torch.int64 and train.labels[:10].tolist() == FIRST_TRAIN
    data = {"dataset": "fashion_mnist", "root": None, "channels": 1, "num_classes": 10, "train_limit": 5000}
    assert data_problems(data) == []
    assert dataset_sizes(data) == (5000, 10_000)


@pytest.mark.parametrize("layout", ["flat_gz", "torchvision_raw"])
def test_data_root_with_idx_files_is_read_exactly(tmp_path, layout):
    folder = tmp_path if layout == "flat_gz" else tmp_path / "FashionMNIST" / "raw"
    arrays = small_set(folder, gz=layout == "flat_gz")
    train, test = load_arrays("fashion_mnist", str(tmp_path))
    assert torch.equal(train.images[:, 0], torch.as_tensor(arrays["train_x"], dtype=torch.uint8))
    assert train.labels.tolist() == arrays["train_y"].tolist() and test.labels.tolist() == arrays["test_y"].tolist()
    data = {"dataset": "fashion_mnist", "root": str(tmp_path), "channels": 1, "num_classes": 10}
    assert data_problems(data) == [] and dataset_sizes(data) == (30, 12)


@pytest.mark.parametrize("damage, words", [
    ("magic", "is not an IDX file of unsigned bytes with 3 dimension(s) (magic 00000d03"),
    ("short", "holds 23511 values but its header declares 30x28x28 = 23520"),
    ("not_gzip", "cannot be read as IDX"),
    ("header_cut", "ends inside its IDX header"),
])
def test_a_damaged_idx_file_is_one_line_naming_it(tmp_path, damage, words):
    arrays = small_set(tmp_path)
    images = tmp_path / idx.FILES["train"][0]
    if damage == "magic":
        write_idx(images, arrays["train_x"], magic=bytes([0, 0, 0x0D, 3]))  # floats, not bytes
    elif damage == "short":
        images.write_bytes(images.read_bytes()[:-9])
    elif damage == "not_gzip":
        images.unlink()
        images = images.with_name(images.name + ".gz")
        images.write_bytes(b"plain bytes, not gzip")
    else:
        images.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(UserError) as err:
        load_arrays("fashion_mnist", str(tmp_path))
    message = str(err.value)
    assert "\n" not in message and str(images) in message and words in message, message
    assert "apt-get install dataset-fashion-mnist" in message


def test_labels_and_images_of_different_lengths_are_refused(tmp_path):
    small_set(tmp_path)
    write_idx(tmp_path / idx.FILES["test"][1], np.zeros(11))
    with pytest.raises(UserError, match=r"holds 12 images but .*t10k-labels-idx1-ubyte 11 labels"):
        load_arrays("fashion_mnist", str(tmp_path))


def test_a_damaged_header_is_caught_before_the_run(tmp_path):
    small_set(tmp_path)
    (tmp_path / idx.FILES["test"][1]).write_bytes(b"\x00\x00\x08\x07junk")
    data = {"dataset": "fashion_mnist", "root": str(tmp_path), "channels": 1, "num_classes": 10}
    problems = data_problems(data)
    assert len(problems) == 1 and "t10k-labels-idx1-ubyte is not an IDX file" in problems[0]
    assert dataset_sizes(data) is None


def test_nowhere_to_be_found_names_the_package_and_data_root(tmp_path, monkeypatch):
    data = {"dataset": "fashion_mnist", "root": str(tmp_path), "channels": 1, "num_classes": 10}
    [problem] = data_problems(data)
    assert f"data.root {tmp_path} holds no Fashion-MNIST IDX files" in problem
    assert "apt-get install dataset-fashion-mnist" in problem
    # as on a machine without the package: Debian's folder absent and no data.root
    monkeypatch.setattr(idx, "DEBIAN_FASHION", tmp_path / "usr-share-datasets-fashion-mnist")
    with pytest.raises(UserError) as err:
        load_arrays("fashion_mnist")
    assert "Fashion-MNIST is not installed" in str(err.value) and "run apt-get install dataset-fashion-mnist" in \
        str(err.value) and "data.root=" in str(err.value) and "\n" not in str(err.value)
    assert data_problems({**data, "root": None}) == [str(err.value)]


@needs_package
def test_train_one_epoch_from_the_debian_package(tmp_path):
    result = run_cli(["train", "data=fashion_mnist", "method=simclr", *SMALL_HEADS["simclr"], "data.train_limit=1024",
                      "data.val_limit=500", "data.batch_size=128", "trainer.max_epochs=1", "logger=none",
                      f"output_root={tmp_path}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    job_dir = only_job_dir(tmp_path)
    results = read_json(job_dir / "results.json")
    assert results["state"] == "COMPLETED" and results["steps"] == 8  # 1024 images in batches of 128
    assert "(all 1024 training images)" in results["evaluation"]["knn"]
    # ten classes: chance is 0.1; the untrained-backbone floor alone is far above it on clothing
    assert results["metrics"]["knn/top1"] > 0.5 and results["floors"]["raw_pixels/knn_top1"] > 0.5
    assert (job_dir / "config.yaml").read_text().count("dataset: fashion_mnist") == 1


@pytest.mark.parametrize("method", ["simclr", "byol", "vicreg", "mocov2", "dino", "barlow_twins"])
def test_fashion_recipes_compose_and_pass_the_checks(method):
    from orchestra.config.compose import compose
    from orchestra.config.validate import config_problems, validation_view

    cfg = compose([f"+experiment=fashion_{method}"])
    assert cfg.data.dataset == "fashion_mnist" and cfg.method_name == method and cfg.trainer.max_epochs == 20
    assert cfg.callbacks.knn.bank_size is None  # the whole training set, as the floors use
    if INSTALLED:
        assert config_problems(validation_view(cfg)) == []
