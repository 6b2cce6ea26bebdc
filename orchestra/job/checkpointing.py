"""``checkpoints/last.ckpt``: written atomically after every validation, the file a resumed job starts from.

Under FSDP and DeepSpeed it is a directory of shards (every rank writes its own); it is published atomically too.
"""

from __future__ import annotations

import os
import shutil
import uuid
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


def staging_path(final: Path) -> Path:
    """Where every rank writes a directory checkpoint before it is published as ``final``."""
    return final.parent / f".{final.name}.partial"


def publish_directory(staging: Path, final: Path) -> None:
    """Make the directory ``staging`` the checkpoint at ``final`` in one atomic step.

    A directory cannot be renamed over a non-empty one, so ``final`` is a symbolic link to a versioned directory
    beside it; swapping the link is one ``rename``. Readers (Lightning's loaders, ``Path.exists``) follow the link.
    """
    final = Path(final)
    previous = final.resolve() if final.is_symlink() else None
    if final.is_dir() and not final.is_symlink():  # a plain directory from elsewhere: keep it readable until swapped
        aside = final.parent / f".{final.name}.{uuid.uuid4().hex[:8]}"
        os.rename(final, aside)
        previous = aside
    version = final.parent / f".{final.name}.{uuid.uuid4().hex[:8]}"
    os.rename(staging, version)
    link = final.parent / f".{final.name}.link"
    link.unlink(missing_ok=True)
    os.symlink(version.name, link)
    os.replace(link, final)
    if previous is not None and previous != version and previous.exists():
        shutil.rmtree(previous, ignore_errors=True)
