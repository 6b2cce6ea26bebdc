"""Multi-crop batches (README "Batch contract"): global views in ``image``, local crops in ``local_image``.

Built from the real shipped digits through the composed data config, as a run builds them. Every view and crop must
be a pure function of (seed, epoch, batch); a rank's batch is its slice of every view; the presets that existed
before multi-crop must give the very batches they gave then.
"""

from __future__ import annotations

import hashlib
import time
import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

import method_zoo as mz
from method_zoo.forwards.common import multi_crop_views, split_crops, two_views
from orchestra.config.compose import compose
from orchestra.data.augment import PRESETS, AugmentSpec, augment_batch, gaussian_blur
from orchestra.data.batches import AugmentedViews, BatchKey, EpochBatchSampler
from orchestra.data.checks import data_problems
from orchestra.data.datamodule import build_datamodule
from orchestra.model.backbones import SmallCNN

TRAIN, BATCH, GLOBAL, LOCAL = 512, 64, 2, 4


def _datamodule(*overrides: str):
    data_cfg = OmegaConf.to_container(
        compose([f"data.train_limit={TRAIN}", "data.val_limit=64", f"data.batch_size={BATCH}", *overrides]).data,
        resolve=True)
    dm = build_datamodule(data_cfg, seed=0)
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def multicrop():
    return _datamodule(f"data.local_views={LOCAL}", "data.local_size=14", "data.augment=dino_digits")


def _dataset(dm, local_views: int = LOCAL) -> AugmentedViews:
    return AugmentedViews(dm.train, dm.recipe, GLOBAL, dm.size, dm.seed, dm.normalize, local_views=local_views,
                          local_size=dm.local_size)


def _keys(epoch: int = 0, batch_size: int = BATCH, rank: int = 0, world_size: int = 1) -> list:
    sampler = EpochBatchSampler(TRAIN, batch_size, 0, shuffle=True, drop_last=True, rank=rank, world_size=world_size)
    sampler.set_epoch(epoch)
    return list(sampler)


def _by_view(tensor: torch.Tensor, views: int) -> torch.Tensor:
    return tensor.reshape(views, tensor.shape[0] // views, *tensor.shape[1:])


def test_layout_of_a_multicrop_batch_from_the_shipped_digits(multicrop):
    batch = next(iter(multicrop.train_dataloader()))
    assert batch.keys() == {"image", "label", "sample_idx", "local_image", "local_sample_idx"}
    assert batch["image"].shape == (GLOBAL * BATCH, 1, 28, 28)
    assert batch["local_image"].shape == (LOCAL * BATCH, 1, 14, 14)
    assert batch["local_image"].dtype == batch["image"].dtype == torch.float32
    ids = batch["sample_idx"][:BATCH]
    assert ids.unique().numel() == BATCH
    assert torch.equal(batch["sample_idx"], ids.repeat(GLOBAL))
    assert torch.equal(batch["local_sample_idx"], ids.repeat(LOCAL))  # the same images, in the same order
    assert torch.equal(batch["label"], multicrop.train.labels[batch["sample_idx"]])
    crops = _by_view(batch["local_image"], LOCAL)
    for a in range(LOCAL):  # every crop is its own draw
        for b in range(a + 1, LOCAL):
            assert not torch.allclose(crops[a], crops[b])
    # Validation and bank batches are untouched by multi-crop.
    assert "local_image" not in next(iter(multicrop.val_dataloader()))


def test_the_same_key_gives_the_same_batch_and_resume_starts_where_it_stopped(multicrop):
    keys = _keys(epoch=2)
    first, second = _dataset(multicrop), _dataset(multicrop)
    for key in (keys[0], keys[5]):
        a, b = first[key], second[key]
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), name
    # A resumed epoch (3 batches done) yields the 4th batch first, local crops included.
    sampler = EpochBatchSampler(TRAIN, BATCH, 0, shuffle=True, drop_last=True)
    sampler.set_epoch(2)
    sampler.resume_at = (2, 3)
    resumed = second[next(iter(sampler))]
    assert torch.equal(resumed["local_image"], first[keys[3]]["local_image"])
    # Another epoch draws other crops.
    assert not torch.equal(first[_keys(epoch=3)[0]]["local_image"], first[keys[0]]["local_image"])


@pytest.mark.parametrize(("world_size", "batch_size"), [(2, 64), (3, 48)])
def test_rank_shards_concatenate_to_the_single_process_batch(multicrop, world_size, batch_size):
    dataset = _dataset(multicrop)
    whole = dataset[_keys(epoch=1, batch_size=batch_size)[2]]
    parts = [dataset[_keys(epoch=1, batch_size=batch_size, rank=r, world_size=world_size)[2]]
             for r in range(world_size)]
    for name, views in (("image", GLOBAL), ("sample_idx", GLOBAL), ("label", GLOBAL),
                        ("local_image", LOCAL), ("local_sample_idx", LOCAL)):
        joined = torch.cat([_by_view(p[name], views) for p in parts], dim=1)
        assert torch.equal(joined, _by_view(whole[name], views)), name


# Computed by the code before multi-crop existed (commit c4be07e) for the shipped digits with the default data
# config: epoch 3, batch 1 of 64, train_limit 512, seed 0. Sums to 3 decimals tolerate last-bit float differences
# between machines; any other random draw or a changed step moves them by far more.
OLD_SAMPLE_IDX_SHA = "d5f71143e429b5fa"
OLD_VIEW_SUMS = [1188.837, 483.065]
OLD_VIEW_ABS_SUMS = [34123.43, 33695.769]


def test_presets_that_existed_before_give_the_same_batches():
    dm = _datamodule()  # the shipped default: data.augment=digits, data.local_views=0
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(3)
    batches = iter(loader)
    next(batches)
    batch = next(batches)
    assert batch.keys() == {"image", "label", "sample_idx"}
    assert hashlib.sha256(batch["sample_idx"].numpy().tobytes()).hexdigest()[:16] == OLD_SAMPLE_IDX_SHA
    per_view = batch["image"].double().reshape(GLOBAL, BATCH, -1)
    assert per_view.sum(dim=(1, 2)).tolist() == pytest.approx(OLD_VIEW_SUMS, abs=0.05)
    assert per_view.abs().sum(dim=(1, 2)).tolist() == pytest.approx(OLD_VIEW_ABS_SUMS, abs=0.05)
    # The old way of building the dataset (one bare spec for every view) gives the same batch bit for bit.
    old_way = AugmentedViews(dm.train, AugmentSpec(crop_scale=(0.6, 1.4), rotation_degrees=15.0), GLOBAL, dm.size,
                             dm.seed, dm.normalize)
    key = _keys(epoch=3)[1]
    assert torch.equal(old_way[key]["image"], batch["image"])
    # Asking for local crops adds them without moving any global view.
    with_locals = _dataset(dm, local_views=6)[key]
    assert torch.equal(with_locals["image"], batch["image"])
    assert with_locals["local_image"].shape == (6 * BATCH, 1, 14, 14)
    # The natural preset still draws exactly what its bare spec draws (no blur or solarize steps for it).
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    spec = AugmentSpec(crop_scale=(0.2, 1.0), horizontal_flip=True, color_jitter=0.4, grayscale_p=0.2)
    assert PRESETS["natural"].views == (spec,)
    assert torch.equal(augment_batch(images, PRESETS["natural"].for_view(1), 32, torch.Generator().manual_seed(7)),
                       augment_batch(images, spec, 32, torch.Generator().manual_seed(7)))


def _noise(n: int) -> torch.Tensor:
    # Pixels in [0.55, 1]: a solarized image has none at or above 0.5, and i.i.d. noise shows any blur at once.
    return torch.randint(140, 256, (n, 1, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def _rates(spec: AugmentSpec, n: int = 4000, seed: int = 1) -> tuple[float, float]:
    # The preset's probabilities with an identity crop (the view is the image itself) and sigmas large enough to see.
    probe = replace(spec, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), rotation_degrees=0.0, blur_sigma=(1.0, 2.0))
    x = augment_batch(_noise(n), probe, 24, torch.Generator().manual_seed(seed))
    solarized = x.amax(dim=(1, 2, 3)) < 0.5
    roughness = (x[..., 1:] - x[..., :-1]).abs().mean(dim=(1, 2, 3))  # about 0.15 unblurred, under 0.06 blurred
    blurred = roughness < 0.09
    return blurred.float().mean().item(), solarized.float().mean().item()


@pytest.mark.parametrize("preset", ["byol_digits", "dino_digits"])
def test_blur_and_solarize_follow_each_views_probability(preset):
    recipe = PRESETS[preset]
    expected = [(1.0, 0.0), (0.1, 0.2)]  # BYOL's view 1 and view 2; DINO's two globals
    for view, (blur_p, solarize_p) in enumerate(expected):
        blurred, solarized = _rates(recipe.for_view(view), seed=view)
        assert blurred == pytest.approx(blur_p, abs=0.03), (view, blurred)
        assert solarized == pytest.approx(solarize_p, abs=0.03), (view, solarized)
    blurred, solarized = _rates(recipe.local, seed=9)
    assert blurred == pytest.approx(0.5, abs=0.03)
    assert solarized == 0.0
    assert recipe.local.crop_scale == (0.05, 0.4)
    assert _rates(PRESETS["digits"].for_view(0)) == (0.0, 0.0)  # the old preset neither blurs nor solarizes


def test_natural_recipes_carry_the_same_probabilities():
    for name in ("byol_natural", "dino_natural"):
        recipe = PRESETS[name]
        assert [(s.blur_p, s.solarize_p) for s in recipe.views] == [(1.0, 0.0), (0.1, 0.2)]
        assert (recipe.local.blur_p, recipe.local.solarize_p) == (0.5, 0.0)
        x = augment_batch(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8), recipe.for_view(1), 16,
                          torch.Generator().manual_seed(0))
        assert x.shape == (8, 3, 16, 16) and 0 <= x.min() and x.max() <= 1


def test_batched_blur_equals_torchvision_per_image():
    from torchvision.transforms.v2 import functional as TF

    x = torch.rand(5, 3, 20, 20, generator=torch.Generator().manual_seed(3))
    out = gaussian_blur(x, 1.0, (0.5, 2.0), torch.Generator().manual_seed(4))
    replay = torch.Generator().manual_seed(4)  # the same draws: which images, then their sigmas
    torch.rand(5, generator=replay)
    sigmas = 0.5 + 1.5 * torch.rand(5, generator=replay)
    for i in range(5):
        expected = TF.gaussian_blur(x[i], kernel_size=[13, 13], sigma=[float(sigmas[i])] * 2)  # radius ceil(3*2)
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=1e-5)


def _simclr() -> nn.Module:
    module = nn.Module()
    module.backbone, module.projector, module.simclr_loss = nn.Flatten(), nn.Linear(4, 3), mz.NTXEntLoss()
    module.forward = types.MethodType(mz.simclr_forward, module)
    return module


def test_a_two_view_method_refuses_local_crops_in_one_line(multicrop):
    batch = _dataset(multicrop)[_keys()[0]]
    small = {**batch, "image": torch.randn(GLOBAL * BATCH, 4)}
    with pytest.raises(mz.MethodError) as info:
        _simclr()(small, "train")
    message = str(info.value)
    assert "\n" not in message
    assert message == ("simclr_forward uses two views; data.local_views=4 adds local crops it would ignore; "
                       "set data.local_views=0")
    # Without local crops the same method trains, and validation batches never carry any.
    two_view = {k: v for k, v in small.items() if not k.startswith("local_")}
    assert torch.isfinite(_simclr()(two_view, "train")["loss"])


def test_the_multicrop_helpers(multicrop):
    two_view = next(iter(_datamodule().train_dataloader()))
    with pytest.raises(mz.MethodError) as info:
        multi_crop_views(two_view, "dino_forward")
    assert str(info.value) == "dino_forward needs local crops: set data.local_views=6 (and data.local_size)"
    with pytest.raises(mz.MethodError, match="uses two views"):
        two_views(two_view["sample_idx"].float(), {**two_view, "local_image": torch.zeros(4)}, "byol_forward")

    batch = _dataset(multicrop)[_keys()[1]]
    crops = multi_crop_views(batch, "dino_forward")
    assert crops.local_images is batch["local_image"] and crops.global_sample_idx is batch["sample_idx"]
    # Per-row outputs that name their image: every regrouped tensor must list the same images on the same rows.
    globals_, locals_ = split_crops(batch["sample_idx"].view(-1, 1), batch["local_sample_idx"].view(-1, 1), batch,
                                    GLOBAL, "dino_forward")
    assert len(globals_) == GLOBAL and len(locals_) == LOCAL
    for view in globals_ + locals_:
        assert torch.equal(view, globals_[0])
    # Shuffled local rows of a batch on the host are named, not silently paired with the wrong images.
    shuffled = {**batch, "local_sample_idx": batch["local_sample_idx"].flip(0)}
    with pytest.raises(mz.MethodError, match="same order"):
        split_crops(batch["sample_idx"].view(-1, 1), shuffled["local_sample_idx"].view(-1, 1), shuffled, GLOBAL,
                    "dino_forward")


def test_bad_multicrop_keys_are_refused_before_a_run():
    base = OmegaConf.to_container(compose([]).data, resolve=True)
    assert data_problems(base) == []
    problems = data_problems({**base, "local_views": -1, "local_size": 0, "local_crop_scale": [0.5, 0.1],
                              "global_crop_scale": "big"})
    assert len(problems) == 4
    assert any(p.startswith("data.local_views must be a non-negative integer") for p in problems)
    assert any("data.local_crop_scale must be [low, high]" in p for p in problems)
    assert data_problems({**base, "local_views": 6, "local_crop_scale": [0.1, 0.3]}) == []


def _folders(root: Path) -> dict:
    noise = torch.Generator().manual_seed(0)
    for split, count in (("train", 6), ("val", 2)):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = torch.randint(0, 256, (24, 24, 3), dtype=torch.uint8, generator=noise).numpy()
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    data = yaml.safe_load((Path(__file__).resolve().parents[2] / "conf" / "data" / "imagefolder.yaml").read_text())
    data.update(root=str(root), num_classes=2, image_size=16, batch_size=4, num_workers=0)
    return data


def test_image_folders_make_local_crops_that_move_no_global_view(tmp_path):
    from orchestra.data.imagefolder import view_builder

    data = _folders(tmp_path)
    key = BatchKey(1, 0, torch.tensor([3, 7, 0, 10]), 0, 1)
    plain = build_datamodule(data, seed=0)
    plain.setup("fit")
    before = plain.folders["train"][key]
    assert before.keys() == {"image", "label", "sample_idx"}
    # Folders draw their views with the same batched builder as in-memory data (issue 14), from the decoded batch.
    raw = build_datamodule({**data, "pipeline": "gpu"}, seed=0)
    raw.setup("fit")
    expected = view_builder(PRESETS["natural"], GLOBAL, 16, 0)(raw.folders["train"][key])
    assert torch.equal(before["image"], expected["image"])

    crops = build_datamodule({**data, "local_views": 3, "local_size": 8, "augment": "dino_natural"}, seed=0)
    crops.setup("fit")
    batch, again = crops.folders["train"][key], crops.folders["train"][key]
    assert batch["image"].shape == (GLOBAL * 4, 3, 16, 16) and batch["local_image"].shape == (3 * 4, 3, 8, 8)
    assert torch.equal(batch["local_sample_idx"], key.rows.repeat(3))
    assert torch.equal(batch["local_image"], again["local_image"]) and torch.equal(batch["image"], again["image"])
    natural = build_datamodule({**data, "local_views": 3, "local_size": 8}, seed=0)
    natural.setup("fit")
    assert torch.equal(natural.folders["train"][key]["image"], before["image"])  # local crops move no global view


def test_augmentation_time_of_two_plus_six_crops_against_two_views():
    dm = _datamodule("data.batch_size=256")
    keys = EpochBatchSampler(TRAIN, 256, 0, shuffle=True, drop_last=True)
    key = next(iter(keys))
    timings = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: on a shared machine more threads time the neighbours, not the code
    try:
        _time_datasets(dm, key, timings)
        batch = AugmentedViews(dm.train, PRESETS["dino_digits"], GLOBAL, dm.size, 0, dm.normalize, 6, 14)[key]
        backbone = SmallCNN(in_channels=1)
        two_view = _fastest(lambda: backbone(batch["image"]).sum().backward())
        multi = _fastest(lambda: (backbone(batch["image"]).sum() + backbone(batch["local_image"]).sum()).backward())
    finally:
        torch.set_num_threads(threads)
    base = timings["2 views, digits"]
    print("\naugmentation per batch of 256 on CPU, 1 thread (ms): "
          + ", ".join(f"{name} {ms:.1f} ({ms / base:.2f}x)" for name, ms in timings.items())
          + f"; SmallCNN forward+backward: 2x28 {two_view:.1f}, 2x28 + 6x14 {multi:.1f}")
    assert batch["local_image"].shape == (6 * 256, 1, 14, 14)


def _fastest(step, repeats: int = 5) -> float:
    step()  # warm-up
    runs = []
    for _ in range(repeats):  # the fastest run: the least disturbed by whatever else shares the CPU
        start = time.perf_counter()
        step()
        runs.append(time.perf_counter() - start)
    return min(runs) * 1e3


def _time_datasets(dm, key, timings: dict) -> None:
    for name, recipe, local_views in (("2 views, digits", PRESETS["digits"], 0),
                                      ("2 views, dino_digits", PRESETS["dino_digits"], 0),
                                      ("2x28 + 6x14, dino_digits", PRESETS["dino_digits"], 6)):
        dataset = AugmentedViews(dm.train, recipe, GLOBAL, dm.size, 0, dm.normalize, local_views, 14)
        timings[name] = _fastest(lambda dataset=dataset: dataset[key], repeats=7)
