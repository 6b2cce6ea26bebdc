"""Packed datasets (issue 14): `orchestra data pack` turns a real folder of JPEG/PNG files into memory-mapped arrays
whose rows, labels and statistics are checked against the folder itself; bad files, interrupted packs and damaged
packed folders each give one line; training on a packed set resumes mid-epoch exactly.
"""

from __future__ import annotations

import json
import pickle
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from orchestra_testkit import (
    drop_callback,
    read_json,
    run_cli,
    signal_at,
    tiny_overrides,
    train_in_process,
    train_preempted,
)
from PIL import Image

from orchestra.data.checks import data_problems, dataset_sizes, read_folders
from orchestra.data.decode import decode_resized
from orchestra.data.packed import MappedImages, folder_problems, pack_folder, read_packed
from orchestra.errors import UserError

CLASSES = ("ant", "bee", "cat")
TRAIN_PER_CLASS, VAL_PER_CLASS, SIZE = 10, 4, 32


def make_folder(root: Path) -> Path:
    """root/{train,val}/<class>/NN.{jpg,png}: 64 px images (some not square) whose colour depends on the class, so
    the labels matter, with noise so that every file differs."""
    rng = np.random.default_rng(0)
    for split, count in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                width = 80 if i % 2 else 64
                pixels = rng.integers(0, 60, (64, width, 3)) + np.asarray([[[90 * c, 40, 200 - 90 * c]]])
                image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
                image.save(folder / (f"{i:02d}.png" if i % 3 == 0 else f"{i:02d}.jpg"), quality=90)
    return root


@pytest.fixture(scope="module")
def packed(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("packed")
    src = make_folder(base / "src")
    pack_folder(src, base / "dst", size=SIZE, workers=1)
    return src, base / "dst"


def test_round_trip_rows_labels_pixels_and_statistics(packed):
    src, dst = packed
    train, val, meta = read_packed(dst)
    folders = read_folders(str(src))
    assert meta["classes"] == list(CLASSES) and meta["counts"] == {"train": 30, "val": 12}
    assert train.images.shape == (30, 3, SIZE, SIZE) and len(val) == 12
    assert train.labels.tolist() == [label for _, label in folders.train]
    assert val.labels.tolist() == [label for _, label in folders.val]
    decoded = torch.stack([decode_resized(path, SIZE) for path, _ in folders.train])
    stored = train.images[:]
    assert stored.dtype == torch.uint8 and torch.equal(stored, decoded)  # the very pixels decode_resized gives
    rows = torch.tensor([29, 3, 17, 3, 0])
    assert torch.equal(train.take(rows), decoded[rows]) and torch.equal(train.images[rows], decoded[rows])
    pixels = decoded.permute(1, 0, 2, 3).reshape(3, -1).double() / 255
    assert meta["mean"] == pytest.approx(pixels.mean(dim=1).tolist(), abs=1e-9)
    assert meta["std"] == pytest.approx(pixels.std(dim=1).tolist(), abs=1e-9)


def test_a_limit_takes_the_images_imagefolder_takes_and_the_map_pickles_by_path(packed):
    src, dst = packed
    train, _, _ = read_packed(dst)
    limited = train.head(7)
    folder_rows = read_folders(str(src), train_limit=7).train
    all_paths = [path for path, _ in read_folders(str(src)).train]
    assert limited.images.rows.tolist() == [all_paths.index(path) for path, _ in folder_rows]
    assert limited.labels.tolist() == [label for _, label in folder_rows] == [0, 0, 0, 1, 1, 2, 2]
    assert torch.equal(limited.images[:], train.images[limited.images.rows])
    assert dataset_sizes({"dataset": "packed", "root": str(dst), "train_limit": 7}) == (7, 12)
    # a spawned DataLoader worker gets the path, not the pixels, and maps the same rows
    blob = pickle.dumps(limited.images)
    assert len(blob) < 2_000
    assert torch.equal(pickle.loads(blob)[torch.tensor([6, 0])], limited.images[torch.tensor([6, 0])])


def test_parallel_workers_write_the_same_bytes(packed, tmp_path):
    src, dst = packed
    pack_folder(src, tmp_path / "parallel", size=SIZE, workers=2)  # 42 images: two processes over 32-image chunks
    for split in ("train", "val"):
        for name in ("images.npy", "labels.npy"):
            assert (tmp_path / "parallel" / split / name).read_bytes() == (dst / split / name).read_bytes()


def _with_bad_files(tmp_path: Path) -> tuple[Path, list[str]]:
    src = make_folder(tmp_path / "src")
    good = (src / "train" / "bee" / "01.jpg").read_bytes()
    short = src / "train" / "bee" / "04.jpg"
    short.write_bytes(good[: len(good) // 2])  # a copy cut short
    text = src / "val" / "ant" / "02.jpg"
    text.write_text("not an image")
    return src, [str(short), str(text)]


def test_a_bad_image_stops_the_pack_in_one_line_and_leaves_no_destination(tmp_path):
    src, bad = _with_bad_files(tmp_path)
    with pytest.raises(UserError) as error:
        pack_folder(src, tmp_path / "dst", size=SIZE, workers=1)
    message = str(error.value)
    assert "\n" not in message and bad[0] in message and "--skip-bad-images" in message
    assert not (tmp_path / "dst").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["src"]  # no partial folder left beside it


def test_skip_bad_images_leaves_them_out_and_lists_them(tmp_path):
    src, bad = _with_bad_files(tmp_path)
    with pytest.warns(UserWarning) as warned:
        meta = pack_folder(src, tmp_path / "dst", size=SIZE, skip_bad_images=True, workers=1)
    assert sorted(str(w.message).split(" (")[0] for w in warned) == sorted(f"left out {p}" for p in bad)
    assert [entry["path"] for entry in meta["skipped"]] == bad and meta["counts"] == {"train": 29, "val": 11}
    assert folder_problems(tmp_path / "dst")[1] == []  # the images file was cut to the rows kept
    train, val, _ = read_packed(tmp_path / "dst")
    kept = [(p, label) for p, label in read_folders(str(src)).train if p not in bad]
    assert train.labels.tolist() == [label for _, label in kept]
    assert torch.equal(train.images[:], torch.stack([decode_resized(p, SIZE) for p, _ in kept]))
    assert len(val.images[:]) == 11


def test_an_interrupted_pack_leaves_nothing_that_looks_complete(packed, tmp_path):
    src, _ = packed

    def stop_midway(split, done, total):
        if split == "val":  # train is written whole by then; the stop comes before the last step
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pack_folder(src, tmp_path / "dst", size=SIZE, workers=2, progress=stop_midway)
    assert list(tmp_path.iterdir()) == []


def test_damaged_packed_folders_and_config_mismatches_are_one_line_each(packed, tmp_path):
    src, dst = packed
    data = {"dataset": "packed", "root": str(dst), "channels": 3, "num_classes": 3, "image_size": SIZE}
    assert data_problems(data) == []
    problems = data_problems({**data, "num_classes": 5, "image_size": 64, "channels": 1})
    assert len(problems) == 3 and all("\n" not in p for p in problems)
    assert "data.num_classes=3" in problems[0] and "--size 64" in problems[2]
    assert "data.root is required" in data_problems({**data, "root": "???"})[0]
    missing = data_problems({**data, "root": str(tmp_path / "nowhere")})
    assert len(missing) == 1 and "orchestra data pack SRC" in missing[0]

    copy = tmp_path / "copy"
    pack_folder(src, copy, size=SIZE, workers=1)
    (copy / "val" / "labels.npy").unlink()
    with open(copy / "train" / "images.npy", "r+b") as handle:
        handle.truncate(1000)
    with pytest.raises(UserError) as error:
        read_packed(copy)
    assert "\n" not in str(error.value)
    assert f"{copy / 'train' / 'images.npy'} is truncated" in str(error.value)
    assert f"{copy / 'val' / 'labels.npy'} is missing" in str(error.value)
    (copy / "meta.json").write_text("{not json")
    assert "meta.json is damaged" in folder_problems(copy)[1][0]
    (copy / "meta.json").unlink()
    assert "is not a packed dataset (no meta.json)" in data_problems({**data, "root": str(copy)})[0]


def _packed_run(output_root: Path, dst: Path, *extra: str) -> list[str]:
    return tiny_overrides(output_root, "simclr", "data=packed", f"data.root={dst}", "data.num_classes=3",
                          f"data.image_size={SIZE}", "data.batch_size=10", "data.num_workers=0",
                          "trainer.max_epochs=2", *extra)


def test_training_on_a_packed_set_resumes_mid_epoch_exactly(packed, tmp_path, capsys):
    _, dst = packed
    reference = read_json(train_in_process(_packed_run(tmp_path / "whole", dst)) / "results.json")
    assert reference["state"] == "COMPLETED" and [r["step"] for r in reference["history"]] == [3, 6]

    job_dir = train_preempted(_packed_run(tmp_path / "cut", dst, *signal_at(1, 1, signal.SIGUSR2)))
    assert "at epoch 1 after 1 batches" in capsys.readouterr().out
    drop_callback(job_dir)
    from orchestra.job.body import run_job

    resumed = run_job(job_dir)
    assert resumed["state"] == "COMPLETED" and resumed["attempts"] == 2
    assert [r["step"] for r in resumed["history"]] == [3, 6]
    for key, value in reference["metrics"].items():
        assert resumed["metrics"][key] == pytest.approx(value, abs=1e-6), key


def test_the_cli_packs_names_bad_files_and_trains_on_the_result(tmp_path, capsys):
    from orchestra.cli import main

    src, bad = _with_bad_files(tmp_path)
    assert main(["data", "pack", str(src), str(tmp_path / "dst"), "--size", str(SIZE), "--workers=1"]) == 2
    refused = capsys.readouterr().err
    assert refused.count("\n") == 1 and refused.startswith(f"error: cannot read image {bad[0]}"), refused
    assert "--skip-bad-images" in refused and not (tmp_path / "dst").exists()
    assert main(["data", "pack", str(src), str(tmp_path / "dst"), "--size", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: --size must be a positive integer, got '0'")

    packed = run_cli(["data", "pack", str(src), str(tmp_path / "dst"), "--size", str(SIZE), "--skip-bad-images",
                      "--workers", "2"], cwd=tmp_path)
    assert packed.returncode == 0, packed.stderr
    assert [line for line in packed.stderr.splitlines() if line.startswith("warning: left out")] == [
        f"warning: left out {p} (cannot read image {p} ({reason}))"
        for p, reason in zip(bad, ("Image is incomplete or truncated", "not an image format torchvision or PIL reads"),
                             strict=True)]
    assert "train 29 images, val 11 images, 3 classes" in packed.stdout
    command = next(line for line in packed.stdout.splitlines() if "orchestra train" in line).split("  ", 1)[1]
    assert command == f"orchestra train data=packed data.root={tmp_path / 'dst'} data.num_classes=3 data.image_size=32"
    assert json.loads((tmp_path / "dst" / "meta.json").read_text())["counts"] == {"train": 29, "val": 11}

    trained = run_cli(["train", *command.split()[2:], "data.batch_size=8", "data.num_workers=2",
                       "trainer.max_epochs=1", "logger=none", f"output_root={tmp_path / 'runs'}",
                       "module.hparams.proj_hidden_dim=64", "module.hparams.proj_dim=32"], cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    results = read_json(next((tmp_path / "runs" / "train").iterdir()) / "results.json")
    assert results["state"] == "COMPLETED" and results["history"][-1]["step"] == 3  # 29 images, batches of 8
    assert "floors" not in results or results["floors"] == {}

    assert main(["data", "pack", str(src), str(tmp_path / "dst")]) == 2
    assert "already exists; remove it or choose another destination" in capsys.readouterr().err


def test_mapped_images_index_like_a_tensor(packed):
    _, dst = packed
    images = MappedImages(dst / "train" / "images.npy")
    whole = torch.from_numpy(np.load(dst / "train" / "images.npy"))
    assert torch.equal(images[4], whole[4]) and torch.equal(images[-1], whole[-1])
    assert torch.equal(images[2:9:3], whole[2:9:3]) and torch.equal(images[[5, 1]], whole[[5, 1]])
    assert len(images) == 30 and images.shape == tuple(whole.shape)
    # take() reads a plain numpy memory map too (sorted reads, asked order) and a tensor as it always did
    from orchestra.data.arrays import ImageArrays

    labels = torch.zeros(30, dtype=torch.int64)
    rows = torch.tensor([7, 2, 7, 29])
    mapped = ImageArrays(np.load(dst / "train" / "images.npy", mmap_mode="r"), labels)
    assert torch.equal(mapped.take(rows), whole[rows])
    assert torch.equal(ImageArrays(whole, labels).take(rows), whole[rows])
