"""A first-in-first-out queue of forward outputs (NNCLR's support set), kept as checkpointed buffers."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from torch import nn

from orchestra.callbacks.keys import read_output


class FeatureQueue(nn.Module):
    def __init__(self, length: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("data", torch.zeros(length, dim))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def contents(self) -> torch.Tensor:
        return self.data[: int(self.filled)]

    @torch.no_grad()
    def push(self, rows: torch.Tensor) -> None:
        if dist.is_available() and dist.is_initialized():  # one global queue: every rank enqueues every rank's rows
            gathered = [torch.empty_like(rows) for _ in range(dist.get_world_size())]
            dist.all_gather(gathered, rows.contiguous())
            rows = torch.cat(gathered)
        length = self.data.shape[0]
        rows = rows[-length:].to(self.data.dtype)
        positions = (self.pointer + torch.arange(rows.shape[0], device=rows.device)) % length
        self.data[positions] = rows
        self.pointer.copy_((self.pointer + rows.shape[0]) % length)
        self.filled.copy_(torch.clamp(self.filled + rows.shape[0], max=length))


class OnlineQueue(pl.Callback):
    """Registers ``Module.queues[key]`` and pushes ``outputs[key]`` into it after every training batch."""

    def __init__(self, key: str, queue_length: int, dim: int) -> None:
        self.key, self.queue_length, self.dim = key, queue_length, dim

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.key not in pl_module.queues:
            pl_module.queues[self.key] = FeatureQueue(self.queue_length, self.dim)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pl_module.queues[self.key].push(read_output(outputs, self.key, f"OnlineQueue '{self.key}'"))
