"""data=imagefolder: labels from train's classes in every split, limits that keep every class, and every mistake in
the folders or the data config reported in one line before a run (or, for a file that only fails to decode, as it
loads).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from orchestra.data.batches import BatchKey
from orchestra.data.checks import _npz_lengths, data_problems, dataset_sizes
from orchestra.data.datamodule import build_datamodule
from orchestra.errors import UserError

REPO = Path(__file__).resolve().parents[2]
COLOURS = {"a_red": (220, 20, 20), "b_green": (20, 200, 20), "c_blue": (20, 20, 220), "d_grey": (128, 128, 128)}


def make_folders(root: Path, train: dict[str, int], val: dict[str, int]) -> Path:
    """root/train/<class>/NN.jpg and root/val/<class>/NN.jpg: 16x16 solid colours (classes trivially separable),
    each image a little brighter than the last so the files differ.
    """
    for split, classes in (("train", train), ("val", val)):
        for name, count in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                colour = tuple(min(255, c + 2 * i) for c in COLOURS[name])
                Image.new("RGB", (16, 16), colour).save(folder / f"{i:02d}.jpg", quality=95)
    return root


def config(root: Path | str | None, **overrides) -> dict:
    data = yaml.safe_load((REPO / "conf" / "data" / "imagefolder.yaml").read_text())
    data.update(root=None if root is None else str(root), num_classes=3, image_size=16, batch_size=4,
                eval_batch_size=64, num_workers=0)
    data.update(overrides)
    return data


def datamodule(data: dict):
    module = build_datamodule(data, seed=0)
    module.setup("fit")
    return module


def whole(dataset) -> dict[str, torch.Tensor]:
    return dataset[BatchKey(0, 0, torch.arange(len(dataset)), 0, 1)]


def one_problem(problems: list[str], *words: str) -> str:
    """The single problem line that holds every one of ``words``."""
    hits = [p for p in problems if all(w in p for w in words)]
    assert len(hits) == 1, problems
    assert "\n" not in hits[0]
    return hits[0]


THREE = {"a_red": 8, "b_green": 8, "c_blue": 8}


def test_val_missing_a_train_class_keeps_train_labels(tmp_path):
    root = make_folders(tmp_path, THREE, {"b_green": 4, "c_blue": 4})
    data = config(root)
    assert data_problems(data) == []  # a val split without some of train's classes is fine
    dm = datamodule(data)
    assert dm.num_classes == 3
    # b_green and c_blue are labels 1 and 2 in train, so they are 1 and 2 in val (per-split indexing gave 0 and 1)
    assert dm.folders["val"].labels.tolist() == [1] * 4 + [2] * 4
    assert dm.folders["bank"].labels.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    # nearest class colour (centroids from the bank's images) classifies every val image correctly
    bank, val = whole(dm.folders["bank"]), whole(dm.folders["val"])
    bank_rgb, val_rgb = bank["image"].mean(dim=(2, 3)), val["image"].mean(dim=(2, 3))
    centroids = torch.stack([bank_rgb[bank["label"] == c].mean(0) for c in range(3)])
    predicted = torch.cdist(val_rgb, centroids).argmin(1)
    assert (predicted == val["label"]).float().mean().item() == 1.0


def test_val_class_that_train_lacks_is_refused(tmp_path):
    root = make_folders(tmp_path, {"a_red": 4, "b_green": 4}, {"a_red": 2, "d_grey": 2})
    data = config(root, num_classes=2)
    line = one_problem(data_problems(data), "d_grey", "lacks")
    assert str(root / "val") in line and "train/" in line
    with pytest.raises(UserError, match="d_grey"):
        datamodule(data)


def test_num_classes_is_checked_against_the_train_folders(tmp_path):
    root = make_folders(tmp_path, THREE, {"a_red": 2})
    line = one_problem(data_problems(config(root, num_classes=5)), "data.num_classes=5")
    assert "3 class folders" in line and "set data.num_classes=3" in line
    for unset in (None, "???"):
        line = one_problem(data_problems(config(root, num_classes=unset)), "data.num_classes")
        assert "not set" in line and "set data.num_classes=3" in line
    with pytest.raises(UserError, match="set data.num_classes=3"):
        datamodule(config(root, num_classes=10))


def test_empty_train_folder_is_refused(tmp_path):
    (tmp_path / "train").mkdir()
    make_folders(tmp_path / "x", {}, {"a_red": 2})
    (tmp_path / "x" / "val").rename(tmp_path / "val")
    line = one_problem(data_problems(config(tmp_path)), "has no class folders")
    assert str(tmp_path / "train") in line and "train/<class>/" in line
    with pytest.raises(UserError, match="has no class folders"):
        datamodule(config(tmp_path))


def test_images_outside_class_folders_are_named(tmp_path):
    root = make_folders(tmp_path, {"a_red": 3}, {"a_red": 1})
    for path in (root / "train" / "a_red").iterdir():
        path.rename(root / "train" / path.name)
    (root / "train" / "a_red").rmdir()
    line = one_problem(data_problems(config(root, num_classes=1)), "no class folders")
    assert "its 3 images lie directly in it" in line


def test_class_folder_without_images_is_refused(tmp_path):
    root = make_folders(tmp_path, THREE, {"a_red": 2})
    (root / "train" / "d_grey").mkdir()
    (root / "train" / "d_grey" / "notes.txt").write_text("not an image")
    problems = data_problems(config(root, num_classes=4))
    line = one_problem(problems, "without images")
    assert "d_grey" in line and str(root / "train") in line and "remove" in line
    assert len(problems) == 1  # the 4 folders match num_classes=4; only the empty one is wrong
    # a train split with class folders but no image at all names every folder
    empty = tmp_path / "empty"
    for name in ("a", "b"):
        (empty / "train" / name).mkdir(parents=True)
        (empty / "val" / name).mkdir(parents=True)
    problems = data_problems(config(empty, num_classes=2))
    assert "a, b" in one_problem(problems, str(empty / "train"), "without images")
    with pytest.raises(UserError, match="without images"):
        datamodule(config(empty, num_classes=2))


def test_missing_root_and_bad_values_are_reported_together():
    data = yaml.safe_load((REPO / "conf" / "data" / "imagefolder.yaml").read_text())
    data.update(train_limit="abc", val_limit=0, batch_size=-5, verify_images="many")
    problems = data_problems(data)
    one_problem(problems, "data.root is required")
    one_problem(problems, "data.num_classes is required")
    assert one_problem(problems, "data.train_limit").startswith(
        "data.train_limit must be a positive integer or null, got 'abc'")
    one_problem(problems, "data.val_limit must be a positive integer or null, got 0")
    one_problem(problems, "data.batch_size must be a positive integer, got -5")
    one_problem(problems, "data.verify_images", "'many'")
    assert len(problems) == 6
    assert dataset_sizes(data) is None


@pytest.mark.parametrize("value", ["abc", 0, -5, True, 2.5])
def test_limits_must_be_positive_integers(value):
    line = one_problem(data_problems({"dataset": "mnist10k", "channels": 1, "num_classes": 10, "train_limit": value}),
                       "data.train_limit")
    assert line.startswith(f"data.train_limit must be a positive integer or null, got {value!r}")


def test_corrupt_header_is_caught_before_the_run(tmp_path):
    root = make_folders(tmp_path, THREE, {"a_red": 2})
    bad = root / "train" / "b_green" / "03.jpg"
    bad.write_bytes(b"this is not a jpeg at all")
    line = one_problem(data_problems(config(root)), "not readable images")
    assert str(bad) in line and "1 file(s)" in line and "replace or delete" in line
    assert data_problems(config(root, verify_images=0)) == []  # the check is off
    assert data_problems(config(root, verify_images=10)) == []  # 26 files > 10: checked as they load instead
    dm = datamodule(config(root))  # structure is fine; the file fails as it loads, in one line naming it
    with pytest.raises(UserError, match=f"cannot read image {bad}"):
        whole(dm.folders["bank"])


def truncate(path: Path) -> None:
    """Cut a JPEG right after its start-of-scan header: every header reads, no pixel data follows."""
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"\xff\xda") + 14])
    with Image.open(path) as image:
        assert image.size == (16, 16)


def test_truncated_image_fails_as_it_loads_in_one_line(tmp_path):
    root = make_folders(tmp_path, THREE, {"a_red": 2})
    bad = root / "train" / "c_blue" / "05.jpg"
    truncate(bad)
    assert data_problems(config(root)) == []  # its header reads fine: only decoding finds the damage
    dm = datamodule(config(root, num_workers=1))
    with pytest.raises(UserError) as caught:  # raised in a DataLoader worker and re-raised here
        for _ in dm.bank_dataloader():
            pass
    message = str(caught.value)
    assert message.startswith(f"cannot read image {bad} (") and "\n" not in message
    assert "replace or delete the file" in message


def test_limits_keep_every_class_and_are_deterministic(tmp_path):
    root = make_folders(tmp_path, {"a_red": 8, "b_green": 5, "c_blue": 2}, THREE)
    data = config(root, train_limit=7, val_limit=4)
    assert data_problems(data) == []
    dm = datamodule(data)
    train, val = dm.folders["train"], dm.folders["val"]
    assert torch.bincount(train.labels).tolist() == [3, 2, 2]
    assert torch.bincount(val.labels).tolist() == [2, 1, 1]
    assert dataset_sizes(data) == (7, 4)
    # spread over each class's files, not its first ones
    assert [Path(p).name for p in train.paths[:3]] == ["00.jpg", "02.jpg", "05.jpg"]
    assert datamodule(data).folders["train"].paths == train.paths
    # a limit past the folder's size takes everything
    assert dataset_sizes(config(root, train_limit=1000)) == (15, 24)


def test_mnist10k_sizes_are_read_from_headers_and_match_the_arrays():
    from orchestra.data.arrays import load_embedded

    data = yaml.safe_load((REPO / "conf" / "data" / "mnist10k.yaml").read_text())
    assert data_problems(data) == []
    _npz_lengths.cache_clear()
    started = time.perf_counter()
    sizes = dataset_sizes(data)
    elapsed = time.perf_counter() - started
    train, test = load_embedded()
    assert sizes == (len(train), len(test)) == (8000, 2000)
    assert elapsed < 0.5, elapsed
    assert dataset_sizes({**data, "train_limit": 100, "val_limit": 5000}) == (100, 2000)


def test_built_in_datasets_name_root_download_and_class_count(tmp_path):
    cifar = yaml.safe_load((REPO / "conf" / "data" / "cifar10.yaml").read_text())
    missing = {**cifar, "root": str(tmp_path / "nowhere"), "num_classes": 100}
    problems = data_problems(missing)
    one_problem(problems, "data.root", "data.download=true")
    one_problem(problems, "data.num_classes=100 but cifar10 has 10")
    assert dataset_sizes(missing) is None  # not downloaded: unknown
    assert data_problems({**cifar, "root": str(tmp_path), "download": True}) == []
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"")
    assert dataset_sizes({**cifar, "root": str(tmp_path), "train_limit": 256}) == (256, 10_000)
    assert one_problem(data_problems({"dataset": "imagenet"}), "data.dataset").startswith("data.dataset 'imagenet'")


def train_folders(tmp_path: Path, root: Path, *extra: str) -> tuple[int, dict]:
    """A one-epoch simclr run on the folders through ``orchestra train``: (exit code, results.json)."""
    from orchestra_testkit import SMALL_HEADS, only_job_dir, read_json

    from orchestra.cli import main

    out = tmp_path / "out"
    code = main(["train", "method=simclr", *SMALL_HEADS["simclr"], "data=imagefolder", f"data.root={root}",
                 "data.num_classes=3", "data.image_size=16", "data.batch_size=8", "data.eval_batch_size=64",
                 "data.num_workers=0", "trainer.max_epochs=1", "logger=none", f"output_root={out}", *extra])
    return code, read_json(only_job_dir(out) / "results.json")


def test_a_run_on_folders_whose_val_lacks_a_class_scores_its_colours(tmp_path):
    root = make_folders(tmp_path / "images", THREE, {"b_green": 4, "c_blue": 4})
    code, results = train_folders(tmp_path, root)
    assert code == 0 and results["state"] == "COMPLETED"
    # solid colours: any embedding separates them once val labels mean what train's labels mean
    assert results["metrics"]["knn/top1"] == 1.0


def test_a_run_meeting_a_damaged_image_fails_in_one_line(tmp_path):
    root = make_folders(tmp_path / "images", THREE, {"a_red": 2})
    bad = root / "train" / "a_red" / "01.jpg"
    truncate(bad)
    code, results = train_folders(tmp_path, root)
    assert code != 0 and results["state"] == "FAILED"
    assert results["error"].startswith(f"cannot read image {bad} (") and "\n" not in results["error"]
