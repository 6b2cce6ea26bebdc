"""Top-1 counts that add up exactly across ranks (a mean of per-rank means would weight shards wrongly)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class Top1Counter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("counts", torch.zeros(2, dtype=torch.float64), persistent=False)

    def reset(self) -> None:
        self.counts.zero_()

    def update(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        self.counts[0] += (predictions == targets).sum()
        self.counts[1] += targets.numel()

    def compute(self) -> float:
        counts = self.counts.clone()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
        return float(counts[0] / counts[1]) if counts[1] > 0 else float("nan")
