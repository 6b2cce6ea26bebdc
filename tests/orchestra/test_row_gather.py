"""method_zoo.distributed's gathers without gradient, as the kNN bank uses them: every rank's shard of a dataset
pass comes back, on every rank, in dataset order."""

import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))  # the spawned ranks import the worker by plain name
import row_gather_worker as workers
from multi_rank_jobs import free_port

from method_zoo.distributed import all_gather_stacked, gather_in_dataset_order


def test_two_gloo_ranks_with_uneven_shards_each_get_the_whole_pass_in_row_order(tmp_path):
    mp.spawn(workers.worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    rows = torch.arange(9)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(got["features"], torch.stack([rows.double(), rows.double() ** 2], dim=1))
        assert torch.equal(got["labels"], rows * 100)
        assert torch.equal(got["stacked"], torch.tensor([[0, 0], [1, 10]]))


def test_one_process_sorts_its_own_rows():
    rows, features, labels = workers.shard(0)
    got_features, got_labels = gather_in_dataset_order(rows, features, labels)
    assert got_labels.tolist() == [0, 200, 400, 600, 800]
    assert torch.equal(got_features[:, 0], got_labels.double() / 100)


def test_one_process_stacks_a_world_of_one():
    x = torch.arange(6.0).reshape(3, 2)
    assert torch.equal(all_gather_stacked(x), x[None])
