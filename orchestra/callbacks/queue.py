"""Feeds a Module's feature queue (NNCLR's support set) with a forward output after every training batch."""

from __future__ import annotations

import lightning.pytorch as pl

from method_zoo.queue import FeatureQueue
from orchestra.callbacks.keys import read_output


class OnlineQueue(pl.Callback):
    """Registers a :class:`method_zoo.queue.FeatureQueue` as ``Module.queues[key]`` and pushes ``outputs[key]``."""

    def __init__(self, key: str, queue_length: int, dim: int) -> None:
        self.key, self.queue_length, self.dim = key, queue_length, dim

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.key not in pl_module.queues:
            pl_module.queues[self.key] = FeatureQueue(self.queue_length, self.dim)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        pl_module.queues[self.key].push(read_output(outputs, self.key, f"OnlineQueue '{self.key}'"))
