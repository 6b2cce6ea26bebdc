"""Experiment loggers from the ``logger`` config group: none, csv, or wandb (offline unless asked otherwise)."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

from omegaconf import DictConfig


def build_logger(cfg: DictConfig, job_dir: Path, run_name: str):
    kind = cfg.get("kind", "none")
    if kind == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=str(job_dir), name="csv", version="")
    if kind == "wandb":
        try:
            from lightning.pytorch.loggers import WandbLogger

            # Derived from the job dir: the same on every rank and after every requeue, so a member stays one run.
            run_id = hashlib.sha1(str(job_dir.resolve()).encode()).hexdigest()[:16]
            return WandbLogger(project=cfg.get("project", "orchestra"), entity=cfg.get("entity"), name=run_name,
                               id=run_id, resume="allow", save_dir=str(job_dir),
                               offline=cfg.get("mode", "offline") != "online")
        except Exception as err:  # logging must never cost a run its results
            warnings.warn(f"wandb logger unavailable ({err}); continuing without it", stacklevel=1)
            return False
    return False
