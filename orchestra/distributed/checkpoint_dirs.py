"""Sharded checkpoints (FSDP, DeepSpeed) are directories that every rank writes into; readers must only ever see
a complete one, so each is written beside its final name and published in one atomic step."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path


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
