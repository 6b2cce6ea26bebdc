"""Reassemble the shards of a dataset pass, one per rank, into dataset order on every rank."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist

AllGather = Callable[[torch.Tensor], torch.Tensor]  # (n, ...) on each rank -> (world, n, ...) on every rank


def all_gather_stacked(tensor: torch.Tensor) -> torch.Tensor:
    """(world, n, ...) from every rank's (n, ...); plain torch.distributed serves DDP, FSDP and DeepSpeed alike."""
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.stack(parts)


def gather_in_dataset_order(all_gather: AllGather, world_size: int, rows: torch.Tensor,
                            *columns: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every rank's ``columns``, on every rank, sorted by their dataset ``rows``.

    Shards may differ in length (the last batch rarely splits evenly); each is padded to the longest for the
    collective and the padding dropped by its row of -1. Sorting by row makes the result the single-process pass,
    whatever the number of ranks.
    """
    if world_size == 1:
        order = rows.argsort()
        return tuple(column[order] for column in columns)
    device = columns[0].device
    rows = rows.to(device)
    longest = int(all_gather(torch.tensor([rows.numel()], device=device)).max())
    gathered_rows = all_gather(_pad(rows, longest, -1)).flatten()
    keep = gathered_rows >= 0
    order = gathered_rows[keep].argsort()
    return tuple(all_gather(_pad(column, longest, 0)).flatten(0, 1)[keep][order] for column in columns)


def _pad(tensor: torch.Tensor, length: int, value: float) -> torch.Tensor:
    padding = tensor.new_full((length - tensor.shape[0], *tensor.shape[1:]), value)
    return torch.cat([tensor, padding])
