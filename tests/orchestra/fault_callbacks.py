"""A real training failure on demand, for tests that need a FAILED member beside completed ones of the same
configuration (members of a sweep share every override except the swept ones, so the fault keys on the seed).
"""

from __future__ import annotations

import lightning.pytorch as pl


class FailForSeed(pl.Callback):
    """Raises at the start of training in the member whose ``seed`` equals ``fail_for``; others train normally."""

    def __init__(self, seed: int, fail_for: int) -> None:
        self.seed, self.fail_for = int(seed), int(fail_for)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.seed == self.fail_for:
            raise RuntimeError(f"injected training failure for seed {self.seed}")
