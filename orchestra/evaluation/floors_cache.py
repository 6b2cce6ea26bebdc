"""The no-training floors, remembered per (exact data, exact initial weights): a rerun of a configuration, or a sweep
over settings that do not touch the initialisation (learning rate, optimiser, epochs), skips the two passes.

The key hashes the tensors themselves, not the config: equal bytes in, equal floors out, whatever the config says.
Kept under ``$ORCHESTRA_CACHE_DIR/floors``, by default ``$XDG_CACHE_HOME/orchestra/floors`` (``~/.cache``); a
missing or unreadable entry is computed.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import torch

from launch.atomic import write_json

VERSION = "floors-1"  # change when the floors' protocol changes, so old entries are never read


def cache_dir() -> Path:
    if os.environ.get("ORCHESTRA_CACHE_DIR"):
        return Path(os.environ["ORCHESTRA_CACHE_DIR"]) / "floors"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "orchestra" / "floors"


def floors_key(tensors: Iterable[tuple[str, torch.Tensor]], settings: dict) -> str:
    digest = hashlib.sha256(json.dumps({"version": VERSION, **settings}, sort_keys=True).encode())
    for name, tensor in tensors:
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_cached(key: str) -> dict[str, float] | None:
    try:
        floors = json.loads((cache_dir() / f"{key}.json").read_text())
    except (OSError, ValueError):
        return None
    return floors if isinstance(floors, dict) and all(isinstance(v, float) for v in floors.values()) else None


def write_cached(key: str, floors: dict[str, float]) -> None:
    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        write_json(cache_dir() / f"{key}.json", floors)
    except OSError:
        pass  # a read-only home only costs the next run the two passes
