"""Training batches are a pure function of (seed, epoch, batch index), and a rank's shard is exactly its slice of
the single-process batch. Resume-equals-uninterrupted and DDP-equals-single-process both rest on this.
"""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from orchestra.config.compose import compose
from orchestra.data.batches import AugmentedViews, EpochBatchSampler
from orchestra.data.datamodule import build_datamodule

TRAIN = 512
VIEWS = 2


@pytest.fixture(scope="module")
def datamodule():
    # The shipped default data config (its augmentation preset included), on the first 512 training images.
    data_cfg = OmegaConf.to_container(compose([f"data.train_limit={TRAIN}", "data.val_limit=64"]).data, resolve=True)
    dm = build_datamodule(data_cfg, seed=0)
    dm.setup("fit")
    return dm


def _views(dm, seed: int = 0) -> AugmentedViews:
    return AugmentedViews(dm.train, dm.recipe, VIEWS, dm.size, seed, dm.normalize)


def _sampler(seed: int = 0, epoch: int = 0, batch_size: int = 64, rank: int = 0, world_size: int = 1):
    sampler = EpochBatchSampler(TRAIN, batch_size, seed, shuffle=True, drop_last=True, rank=rank,
                                world_size=world_size)
    sampler.set_epoch(epoch)
    return sampler


def _batches(dm, seed: int = 0, epoch: int = 0, batch_size: int = 64, rank: int = 0, world_size: int = 1):
    dataset = _views(dm, seed)
    return [dataset[key] for key in _sampler(seed, epoch, batch_size, rank, world_size)]


def _assert_batches_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() == {"image", "label", "sample_idx"}
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _by_view(tensor: torch.Tensor) -> torch.Tensor:
    """[views * n, ...] (view-major rows) -> [views, n, ...]."""
    return tensor.reshape(VIEWS, tensor.shape[0] // VIEWS, *tensor.shape[1:])


def test_same_seed_epoch_and_index_give_identical_batches(datamodule):
    # Two independent samplers and datasets: nothing but (seed, epoch, index) may decide the batch.
    first = _batches(datamodule, seed=3, epoch=2)
    second = _batches(datamodule, seed=3, epoch=2)
    assert len(first) == len(second) == TRAIN // 64
    for a, b in zip(first, second, strict=True):
        _assert_batches_equal(a, b)
    # Asking for one batch again (as a resumed run does) gives it again, whatever was drawn in between.
    dataset, keys = _views(datamodule, seed=3), list(_sampler(seed=3, epoch=2))
    _assert_batches_equal(dataset[keys[5]], first[5])


def test_batch_contract_rows_views_and_labels(datamodule):
    batch = _batches(datamodule)[0]
    assert batch["image"].shape == (VIEWS * 64, 1, 28, 28)
    assert batch["image"].dtype == torch.float32
    images = _by_view(batch["image"])
    sample_idx = _by_view(batch["sample_idx"])
    # View-major: row i of each view is the same image, and the two augmentations differ.
    assert torch.equal(sample_idx[0], sample_idx[1])
    assert not torch.allclose(images[0], images[1])
    assert torch.equal(batch["label"], datamodule.train.labels[batch["sample_idx"]])
    # drop_last + shuffle: one epoch's batches visit distinct images only.
    rows = torch.cat([_by_view(b["sample_idx"])[0] for b in _batches(datamodule)])
    assert rows.unique().numel() == rows.numel() == TRAIN


@pytest.mark.parametrize(("world_size", "batch_size"), [(2, 64), (3, 50)])  # (3, 50): shards of 17, 17, 16
def test_rank_shards_concatenated_equal_the_single_process_batch(datamodule, world_size, batch_size):
    single = _batches(datamodule, epoch=1, batch_size=batch_size)
    shards = [_batches(datamodule, epoch=1, batch_size=batch_size, rank=r, world_size=world_size)
              for r in range(world_size)]
    for index, whole in enumerate(single):
        parts = [shard[index] for shard in shards]
        sizes = [p["label"].numel() // VIEWS for p in parts]
        assert sum(sizes) == batch_size and max(sizes) - min(sizes) <= 1
        for key in ("image", "label", "sample_idx"):
            # Each shard is view-major over its own rows; per view, rank 0's rows then rank 1's ... are the batch.
            joined = torch.cat([_by_view(p[key]) for p in parts], dim=1)
            assert torch.equal(joined, _by_view(whole[key])), (index, key)


def test_different_epochs_and_seeds_give_different_orders(datamodule):
    def first_rows(seed: int, epoch: int) -> torch.Tensor:
        return next(iter(_sampler(seed=seed, epoch=epoch))).rows

    epoch0, epoch1 = first_rows(0, 0), first_rows(0, 1)
    assert not torch.equal(epoch0, epoch1)
    assert not torch.equal(first_rows(0, 0), first_rows(1, 0))
    # Every epoch is a full permutation of the same images, in its own order.
    order0 = torch.cat([key.rows for key in _sampler(epoch=0)])
    order1 = torch.cat([key.rows for key in _sampler(epoch=1)])
    assert torch.equal(order0.sort().values, torch.arange(TRAIN))
    assert torch.equal(order1.sort().values, torch.arange(TRAIN))
    assert (order0 != order1).float().mean() > 0.9
    # And the augmentations are drawn afresh: the same image in two epochs gets different views.
    image = int(epoch0[0])
    batch0 = _batches(datamodule, epoch=0)[0]
    row1 = int((order1 == image).nonzero()) // 64
    batch1 = _batches(datamodule, epoch=1)[row1]
    view0 = _by_view(batch0["image"])[0][_by_view(batch0["sample_idx"])[0] == image]
    view1 = _by_view(batch1["image"])[0][_by_view(batch1["sample_idx"])[0] == image]
    assert view0.shape == view1.shape == (1, 1, 28, 28)
    assert not torch.allclose(view0, view1)


def test_the_datamodule_loader_follows_set_epoch(datamodule):
    # The DataLoader Lightning iterates: Lightning calls sampler.set_epoch before each epoch.
    loader = datamodule.train_dataloader()
    loader.sampler.set_epoch(1)
    from_loader = next(iter(loader))
    _assert_batches_equal(from_loader, _batches(datamodule, seed=datamodule.seed, epoch=1,
                                                batch_size=datamodule.batch_size)[0])
    loader.sampler.set_epoch(0)
    assert not torch.equal(next(iter(loader))["sample_idx"], from_loader["sample_idx"])
