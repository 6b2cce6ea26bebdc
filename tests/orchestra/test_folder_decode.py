"""Image folders at speed (issue 14): files decoded with torchvision.io to their centre square, batched decoding,
damaged files named in one line (or skipped with a warning naming them), loaders sized from the CPUs SLURM gives,
and a folder run cut mid-epoch that resumes to exactly the uninterrupted one.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import yaml
from orchestra_testkit import SMALL_HEADS, drop_callback, read_json, signal_at, train_in_process, train_preempted
from PIL import Image

from orchestra.data.batches import BatchKey
from orchestra.data.checks import data_problems
from orchestra.data.datamodule import build_datamodule, loader_workers
from orchestra.data.decode import UnreadableImage, decode_batch, decode_resized, read_encoded
from orchestra.job.body import run_job

REPO = Path(__file__).resolve().parents[2]


def smooth(width: int, height: int, seed: int) -> Image.Image:
    """A random smooth RGB picture: 4x5 random colours blown up bilinearly (JPEG keeps such images close)."""
    cells = torch.randint(0, 256, (4, 5, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    return Image.fromarray(cells.numpy()).resize((width, height), Image.BILINEAR)


def pil_reference(path: Path, size: int) -> torch.Tensor:
    """What the PIL route did: short side resized to ``size`` (bilinear, antialiased), centre square cropped."""
    from torchvision.transforms import v2

    with Image.open(path) as image:
        rgb = image.convert("RGB")
    crop = v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size), v2.PILToTensor()])
    return crop(rgb)


def truncate(path: Path) -> None:
    """Cut a JPEG right after its start-of-scan header: every header reads, no pixel data follows."""
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"\xff\xda") + 14])


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp"])
def test_decode_resized_matches_the_pil_route(tmp_path, suffix):
    path = tmp_path / f"wide{suffix}"
    smooth(90, 60, seed=1).save(path, **({"quality": 95} if suffix == ".jpg" else {}))
    got = decode_resized(str(path), 32)
    assert got.shape == (3, 32, 32) and got.dtype == torch.uint8
    want = pil_reference(path, 32)
    difference = (got.float() - want.float()).abs()
    # crop-then-resize vs resize-then-crop differ by a fraction of a pixel's offset; smooth images keep that small
    assert difference.mean() < 2.0 and difference.max() < 24, (difference.mean(), difference.max())
    tall = tmp_path / f"tall{suffix}"
    smooth(40, 70, seed=2).save(tall)
    assert decode_resized(str(tall), 40).shape == (3, 40, 40)  # the short side already fits: no resize, a crop
    assert torch.equal(decode_resized(str(tall), 40), pil_reference(tall, 40))


def test_grey_images_come_out_rgb(tmp_path):
    path = tmp_path / "grey.jpg"
    smooth(30, 30, seed=3).convert("L").save(path)
    image = decode_resized(str(path), 30)
    assert image.shape == (3, 30, 30) and torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_decode_batch_equals_decoding_each_file(tmp_path):
    paths = []
    for i, (w, h) in enumerate([(64, 48), (48, 64), (40, 40), (100, 30)]):
        paths.append(tmp_path / f"{i}.jpg")
        smooth(w, h, seed=i).save(paths[-1], quality=90)
    encoded = [read_encoded(str(p)) for p in paths]
    batch = decode_batch(encoded, 24, "cpu")
    assert batch.shape == (4, 3, 24, 24) and batch.dtype == torch.uint8
    assert torch.equal(batch, torch.stack([decode_resized(str(p), 24) for p in paths]))
    # a PNG among JPEGs: the batched JPEG call fails and every file is decoded on its own
    png = tmp_path / "x.png"
    smooth(50, 40, seed=9).save(png)
    mixed = decode_batch([*encoded, read_encoded(str(png))], 24, "cpu")
    assert torch.equal(mixed[-1], decode_resized(str(png), 24)) and torch.equal(mixed[:4], batch)
    assert decode_batch([], 24, "cpu").shape == (0, 3, 24, 24)


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "missing"])
def test_a_damaged_file_is_one_line_naming_it(tmp_path, damage):
    path = tmp_path / "bad.jpg"
    smooth(32, 32, seed=0).save(path)
    if damage == "corrupt":
        path.write_bytes(b"this is not an image at all")
    elif damage == "truncated":
        truncate(path)
    else:
        path.unlink()
    calls = [lambda: decode_resized(str(path), 16)]
    if damage != "missing":  # without a file there are no bytes to hand to decode_batch
        calls.append(lambda: decode_batch([read_encoded(str(path))], 16, "cpu", names=[str(path)]))
    for call in calls:
        with pytest.raises(UnreadableImage) as caught:
            call()
        message = str(caught.value)
        assert message.startswith(f"cannot read image {path} (") and "\n" not in message
        assert "data.skip_bad_images=true" in message and "decode_jpeg.cpp" not in message


COLOURS = ((220, 20, 20), (20, 200, 20), (20, 20, 220))


def make_folders(root: Path, per_class: int = 8, size: tuple[int, int] = (24, 20)) -> Path:
    """root/{train,val}/c<k>/NN.jpg: each class a colour, each picture its own smooth pattern on top of it."""
    for split, count in (("train", per_class), ("val", 2)):
        for k, colour in enumerate(COLOURS):
            folder = root / split / f"c{k}"
            folder.mkdir(parents=True)
            for i in range(count):
                picture = Image.blend(Image.new("RGB", size, colour), smooth(*size, seed=100 * k + i), 0.3)
                picture.save(folder / f"{i:02d}.jpg", quality=92)
    return root


def data_config(root: Path, **overrides) -> dict:
    data = yaml.safe_load((REPO / "conf" / "data" / "imagefolder.yaml").read_text())
    data.update(root=str(root), num_classes=3, image_size=16, batch_size=6, eval_batch_size=64, num_workers=0)
    data.update(overrides)
    return data


def folders(data: dict):
    module = build_datamodule(data, seed=0)
    module.setup("fit")
    return module.folders


def test_training_batches_are_one_decode_then_batched_views(tmp_path):
    root = make_folders(tmp_path)
    data = data_config(root, pipeline="gpu")  # the loader hands over raw batches
    raw_batches = folders(data)["train"]
    key = BatchKey(1, 2, torch.tensor([5, 0, 17, 9, 22, 3]), 0, 1)
    raw = raw_batches[key]
    assert raw["raw"].shape == (6, 3, 18, 18) and raw["raw"].dtype == torch.uint8  # decode_size = 16 * 8/7
    assert torch.equal(raw["raw"][1], decode_resized(raw_batches.paths[0], 18))
    assert raw["batch_key"].tolist() == [1, 2, 0, 1, 6] and torch.equal(raw["sample_idx"], key.rows)
    assert raw["label"].tolist() == [0, 0, 2, 1, 2, 0]
    assert folders(data_config(root, pipeline="gpu", decode_size=30))["train"][key]["raw"].shape[-1] == 30

    views = folders(data_config(root))["train"]  # pipeline=cpu (default): views built in the loader
    batch, again = views[key], views[key]
    assert batch["image"].shape == (12, 3, 16, 16) and batch["image"].dtype == torch.float32
    assert torch.equal(batch["image"], again["image"])  # a pure function of (seed, epoch, batch)
    assert not torch.equal(views[BatchKey(2, 2, key.rows, 0, 1)]["image"], batch["image"])
    assert torch.equal(batch["sample_idx"], key.rows.repeat(2)) and torch.equal(batch["label"], raw["label"].repeat(2))
    # 2 ranks: each gets exactly its slice of every view of the single-process batch
    halves = [views[BatchKey(1, 2, key.rows, rank, 2)]["image"] for rank in (0, 1)]
    whole = batch["image"].view(2, 6, 3, 16, 16)
    for rank, half in enumerate(halves):
        torch.testing.assert_close(half.view(2, 3, 3, 16, 16), whole[:, 3 * rank:3 * rank + 3], rtol=0, atol=1e-6)
    crops = folders(data_config(root, local_views=2, local_size=8))["train"][key]
    assert crops["local_image"].shape == (12, 3, 8, 8) and torch.equal(crops["image"], batch["image"])


def test_eval_images_are_resized_by_8_7_and_centre_cropped(tmp_path):
    root = make_folders(tmp_path, size=(40, 28))
    val = folders(data_config(root))["val"]
    batch = val[BatchKey(0, 0, torch.arange(len(val)), 0, 1)]
    assert batch["image"].shape == (6, 3, 16, 16) and batch["label"].tolist() == [0, 0, 1, 1, 2, 2]
    # the PIL route (Resize(18) of the short side, CenterCrop(16)), normalised the same way
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    from torchvision.transforms import v2

    for image, path in zip(batch["image"], val.paths, strict=True):
        with Image.open(path) as picture:
            want = v2.Compose([v2.Resize(18, antialias=True), v2.CenterCrop(16), v2.PILToTensor()])(
                picture.convert("RGB"))
        assert (image * std + mean - want / 255).abs().mean() < 4 / 255


def test_skip_bad_images_trains_on_a_zero_image_and_warns_once_naming_it(tmp_path):
    root = make_folders(tmp_path)
    bad = root / "train" / "c1" / "03.jpg"
    truncate(bad)
    key = BatchKey(0, 0, torch.arange(24), 0, 1)
    with pytest.raises(UnreadableImage, match=f"cannot read image {bad} "):
        folders(data_config(root, pipeline="gpu"))["train"][key]
    skipping = folders(data_config(root, pipeline="gpu", skip_bad_images=True))
    with pytest.warns(UserWarning) as caught:
        raw = skipping["train"][key]
        again = skipping["train"][key]
    assert [str(w.message) for w in caught] == [
        f"skipping unreadable image {bad} (Image is incomplete or truncated): a zero image stands in for it "
        f"(data.skip_bad_images=true)"]
    assert raw["raw"][11].count_nonzero() == 0 and raw["raw"][10].count_nonzero() > 0
    assert torch.equal(raw["raw"], again["raw"])
    with warnings.catch_warnings(record=True):
        bank = skipping["bank"][key]["image"]
    assert torch.isfinite(bank).all() and bank.shape == (24, 3, 16, 16)


def test_num_workers_auto_follows_the_cpus_slurm_allocated(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    assert loader_workers("auto") == 5
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert loader_workers("auto") == 0  # the training process keeps the only CPU
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    import os

    assert loader_workers("auto") == max(0, len(os.sched_getaffinity(0)) - 1)
    assert loader_workers(3) == 3 and loader_workers(0) == 0

    root = make_folders(tmp_path)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    module = build_datamodule(data_config(root, num_workers="auto", prefetch=4), seed=0)
    module.setup("fit")
    loader = module.train_dataloader()
    assert (loader.num_workers, loader.persistent_workers, loader.prefetch_factor) == (2, True, 4)
    assert loader.pin_memory is False  # no trainer on CUDA here
    single = build_datamodule(data_config(root, num_workers=0), seed=0)
    single.setup("fit")
    assert single.val_dataloader().num_workers == 0 and single.val_dataloader().prefetch_factor is None

    assert data_problems(data_config(root, num_workers="auto")) == []
    problems = data_problems(data_config(root, num_workers="many", prefetch=0, decode_size=-1, skip_bad_images="y"))
    assert len(problems) == 4, problems
    assert any(p.startswith("data.num_workers must be a non-negative integer or auto, got 'many'") for p in problems)


def overrides(root: Path, output_root: Path, *extra: str) -> list[str]:
    return ["method=simclr", *SMALL_HEADS["simclr"], "data=imagefolder", f"data.root={root}", "data.num_classes=3",
            "data.image_size=16", "data.batch_size=6", "data.eval_batch_size=64", "data.num_workers=0",
            "trainer.max_epochs=2", "logger=none", f"output_root={output_root}", *extra]


def test_a_folder_run_cut_mid_epoch_resumes_exactly(tmp_path):
    root = make_folders(tmp_path / "images")
    whole = train_in_process(overrides(root, tmp_path / "whole"))
    reference = read_json(whole / "results.json")
    assert reference["state"] == "COMPLETED" and reference["steps"] == 8  # 24 images, batches of 6, 2 epochs

    job_dir = train_preempted(overrides(root, tmp_path / "cut", *signal_at(epoch=1, batch=1)))
    drop_callback(job_dir)
    resumed = run_job(job_dir)
    assert resumed["state"] == "COMPLETED" and resumed["attempts"] == 2 and resumed["steps"] == 8
    for key, value in reference["metrics"].items():
        assert resumed["metrics"][key] == pytest.approx(value, abs=1e-6), key
    want = torch.load(whole / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    got = torch.load(job_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    for name, value in want.items():
        if name.startswith("backbone."):
            torch.testing.assert_close(got[name], value, rtol=0, atol=1e-6, msg=name)
