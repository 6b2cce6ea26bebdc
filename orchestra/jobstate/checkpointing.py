"""``checkpoints/last.ckpt``: written atomically after every validation, the file a resumed job starts from.

Under FSDP and DeepSpeed it is a directory of shards (every rank writes its own), published atomically by
``orchestra.distributed.checkpoint_dirs``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Checkpoint

from launch.atomic import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """A preempted job killed mid-write must leave the previous checkpoint intact, so write-then-rename."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        atomic_write(Path(path), lambda handle: torch.save(checkpoint, handle))


class LastCheckpoint(Checkpoint):
    """Saves ``<dirpath>/last.ckpt`` after each validation (Lightning orders Checkpoint callbacks last)."""

    def __init__(self, dirpath: Path) -> None:
        self.path = Path(dirpath) / "last.ckpt"

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            trainer.save_checkpoint(str(self.path))
