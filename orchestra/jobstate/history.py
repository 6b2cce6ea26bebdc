"""Per-validation metrics: kept in the checkpoint (so a resumed run keeps its history) and printed to the job log.

Each record names the attempt that wrote it, so the history of results.json can only grow: an attempt that resumed
from an older checkpoint (the newest was unreadable) adds its replayed epochs beside the first ones instead of
replacing them, and ``merge_history`` never drops a record either side has.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl

Record = dict[str, Any]


def _key(record: Record) -> tuple:
    return record.get("attempt"), record.get("epoch"), record.get("step")


def merge_history(recorded: list[Record], more: list[Record]) -> list[Record]:
    """``recorded`` followed by every record of ``more`` it lacks (same attempt, epoch and step)."""
    seen = {_key(r) for r in recorded if isinstance(r, dict)}
    return [*recorded, *(r for r in more if _key(r) not in seen)]


class ValidationHistory(pl.Callback):
    def __init__(self, attempt: int = 1, echo: bool = True,
                 on_record: Callable[[list[Record]], None] | None = None) -> None:
        self.records: list[Record] = []
        self.attempt, self.echo, self.on_record = attempt, echo, on_record
        self.started = time.monotonic()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: round(float(v), 6) for k, v in trainer.callback_metrics.items() if "/" in k}
        record = {"epoch": trainer.current_epoch, "step": trainer.global_step, "attempt": self.attempt,
                  "metrics": metrics}
        self.records.append(record)
        if self.echo and trainer.is_global_zero:
            shown = "  ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if not k.endswith("train_loss"))
            print(f"[{pl_module.forward_name}] epoch {trainer.current_epoch + 1}/{trainer.max_epochs} "
                  f"step {trainer.global_step}  {shown}  ({time.monotonic() - self.started:.0f}s)", flush=True)
        if self.on_record is not None and trainer.is_global_zero:
            self.on_record(self.records)

    def state_dict(self) -> dict[str, Any]:
        return {"records": self.records}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.records = list(state_dict.get("records", []))
