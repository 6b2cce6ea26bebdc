"""Run inside spawned gloo ranks by test_row_gather.py (a plain module, so the spawned children can import it)."""

import os

import torch
import torch.distributed as dist

from method_zoo.distributed import all_gather_stacked, gather_in_dataset_order

# Uneven shards in no particular order: rank 0 holds 5 rows, rank 1 holds 4 (the last batch split 5/4).
SHARDS = {0: [8, 0, 4, 2, 6], 1: [3, 7, 1, 5]}


def shard(rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows = torch.tensor(SHARDS[rank])
    features = torch.stack([rows.double(), rows.double() ** 2], dim=1)
    return rows, features, rows * 100


def worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        rows, features, labels = shard(rank)
        got_features, got_labels = gather_in_dataset_order(rows, features, labels)
        stacked = all_gather_stacked(torch.tensor([rank, 10 * rank]))
        torch.save({"features": got_features, "labels": got_labels, "stacked": stacked}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()
