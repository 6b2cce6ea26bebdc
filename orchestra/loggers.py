"""Experiment loggers from the ``logger`` config group: none, csv, or wandb (offline unless asked otherwise)."""

from __future__ import annotations

import os
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

            run_id_file = job_dir / "wandb_run_id"
            if not run_id_file.exists():  # the id outlives requeues, so a preempted member stays one run
                run_id_file.write_text(os.urandom(6).hex())
            return WandbLogger(project=cfg.get("project", "orchestra"), entity=cfg.get("entity"), name=run_name,
                               id=run_id_file.read_text().strip(), resume="allow", save_dir=str(job_dir),
                               offline=cfg.get("mode", "offline") != "online")
        except Exception as err:  # logging must never cost a run its results
            warnings.warn(f"wandb logger unavailable ({err}); continuing without it", stacklevel=1)
            return False
    return False
