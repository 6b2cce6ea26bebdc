"""Feature sizes found by running the forward once, so configs need not repeat a backbone's width."""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from orchestra.callbacks.keys import read_output


@torch.no_grad()
def infer_output_dim(trainer: pl.Trainer, pl_module: pl.LightningModule, key: str, reader: str) -> int:
    datamodule = trainer.datamodule
    batch = next(iter(datamodule.val_dataloader()))
    batch = {name: value[:2] for name, value in batch.items()}
    was_training = pl_module.training
    pl_module.eval()
    try:
        outputs = pl_module(batch, stage="val")
    finally:
        pl_module.train(was_training)
    return int(read_output(outputs, key, reader).shape[-1])
