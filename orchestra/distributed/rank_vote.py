"""Ranks agreeing, at a batch boundary, on whether any of them received a preemption signal.

A scheduler signals every task, but not at the same instant: one rank may see the signal before a batch starts and
another only after. A checkpoint under DDP, FSDP or DeepSpeed is a collective step, so all ranks must save at the
same batch or they wait on each other forever. One tiny all-reduce on a CPU (gloo) group per batch decides it
without a device synchronisation.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class SignalVote:
    def __init__(self) -> None:
        self.group = None
        self.active = False

    def start(self, world_size: int) -> None:
        """Called by every rank at the same point (creating a group is collective)."""
        self.active = world_size > 1 and dist.is_available() and dist.is_initialized()
        if self.active and self.group is None:
            self.group = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")

    def agreed_signal(self, received: int | None) -> int | None:
        """The signal number any rank received (the largest if several), or None when none did."""
        if not self.active:
            return received
        vote = torch.tensor([received or 0], dtype=torch.int64)
        dist.all_reduce(vote, op=dist.ReduceOp.MAX, group=self.group)
        return int(vote.item()) or None
