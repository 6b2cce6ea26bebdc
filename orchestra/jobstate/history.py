"""Per-validation metrics: kept in the checkpoint (so a resumed run keeps its history) and printed to the job log."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl


class ValidationHistory(pl.Callback):
    def __init__(self, echo: bool = True) -> None:
        self.records: list[dict[str, Any]] = []
        self.echo = echo
        self.started = time.monotonic()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: round(float(v), 6) for k, v in trainer.callback_metrics.items() if "/" in k}
        record = {"epoch": trainer.current_epoch, "step": trainer.global_step, "metrics": metrics}
        self.records.append(record)
        if self.echo and trainer.is_global_zero:
            shown = "  ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if not k.endswith("train_loss"))
            print(f"[{pl_module.forward_name}] epoch {trainer.current_epoch + 1}/{trainer.max_epochs} "
                  f"step {trainer.global_step}  {shown}  ({time.monotonic() - self.started:.0f}s)", flush=True)

    def state_dict(self) -> dict[str, Any]:
        return {"records": self.records}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.records = list(state_dict.get("records", []))
