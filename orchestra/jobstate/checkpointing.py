"""``checkpoints/last.ckpt``: written atomically after every validation, the file a resumed job starts from.

Under FSDP and DeepSpeed it is a directory of shards (every rank writes its own), published atomically by
``orchestra.distributed.checkpoint_dirs``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Checkpoint

from launch.atomic import atomic_write
from orchestra.jobstate.job_dir import PREVIOUS_CHECKPOINT


class AtomicCheckpointIO(TorchCheckpointIO):
    """A preempted job killed mid-write must leave the previous checkpoint intact, so write-then-rename; and a
    checkpoint damaged later (a full disk, a copy cut short) must not be the only one, so ``last.ckpt`` keeps its
    predecessor as ``previous.ckpt`` (a hard link to the old file: no copy, and the rename below cannot touch it)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        if path.name == "last.ckpt" and path.is_file() and not path.is_symlink():
            keep_as_previous(path, path.with_name(PREVIOUS_CHECKPOINT))
        atomic_write(path, lambda handle: torch.save(checkpoint, handle))


def keep_as_previous(last: Path, previous: Path) -> None:
    staged = previous.with_name(f".{previous.name}.link")
    staged.unlink(missing_ok=True)
    try:
        os.link(last, staged)
    except OSError:  # a file system without hard links: a copy costs time, never the checkpoint
        shutil.copyfile(last, staged)
    os.replace(staged, previous)


class LastCheckpoint(Checkpoint):
    """Saves ``<dirpath>/last.ckpt`` after each validation (Lightning orders Checkpoint callbacks last)."""

    def __init__(self, dirpath: Path) -> None:
        self.path = Path(dirpath) / "last.ckpt"

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            trainer.save_checkpoint(str(self.path))
