"""Validation every N epochs (``trainer.check_val_every_n_epoch``) that never skips the last epoch.

Reports take the metrics of the last validation and call them the last epoch's (the evaluation protocol), but
Lightning validates only when ``(epoch + 1) % N == 0``: with N=2 and 3 epochs the last validation would be epoch
2's. Lightning reads the interval from the trainer at every batch end, so setting it to 1 for the final epoch (and
back to N before any other) makes that epoch validate, and with it write ``last.ckpt`` and the results' history.
An epoch without validation writes no checkpoint; a preempted job still resumes exactly, because preemption saves
at the next batch boundary (``jobstate/preemption.py``), whichever epoch it falls in.
"""

from __future__ import annotations

import lightning.pytorch as pl


def validates_at(epoch: int, every: int | None, max_epochs: int | None) -> bool:
    """Whether 0-based ``epoch`` ends with a validation: every ``every``-th epoch, and always the last one."""
    if every is None or every <= 1:
        return True
    last = max_epochs is not None and max_epochs > 0 and epoch == max_epochs - 1
    return last or (epoch + 1) % every == 0


class ValidateLastEpoch(pl.Callback):
    """Keeps ``trainer.check_val_every_n_epoch`` = N, except 1 during the last epoch of ``max_epochs``."""

    def __init__(self) -> None:
        self.every: int | None = None
        self.known = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self.known:  # the configured interval, read once: later it is ours
            self.every, self.known = trainer.check_val_every_n_epoch, True

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every is None or self.every <= 1:
            return
        due = validates_at(trainer.current_epoch, self.every, trainer.max_epochs)
        trainer.check_val_every_n_epoch = 1 if due else self.every
