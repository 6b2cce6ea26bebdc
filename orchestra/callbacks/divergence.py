"""Stopping a run whose numbers stopped being numbers: a non-finite loss, parameter or BatchNorm statistic.

Without this, a learning rate of 1e6 drives the loss and the running statistics to inf/NaN and the run still ends
COMPLETED, at chance accuracy, in the comparison table. The guard raises ``Diverged`` instead, before the next
checkpoint is written, so ``last.ckpt`` stays the last healthy state.

Reading a GPU tensor's value waits for the device, so the loss is only folded into a flag on its own device each
step; the flag is read every ``trainer.log_every_n_steps`` steps (the steps the loggers sync anyway) and before
every validation, and the step it first went bad is kept on the device too. All ranks decide together.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl
import torch

_last: dict[str, Any] | None = None


def last_divergence() -> dict[str, Any] | None:
    """What the last guard in this process stopped for (read by the wandb logger when it closes the run)."""
    return _last


class Diverged(RuntimeError):
    """Training produced a non-finite value; ``details`` is what results.json records under ``divergence``."""

    def __init__(self, details: dict[str, Any]) -> None:
        self.details = details
        hint = "lower optim.lr" if details["what"] == "loss" else "lower optim.lr or check the data"
        super().__init__(f"{details['what']} became non-finite at step {details['step']} (epoch "
                         f"{details['epoch']}, lr {details['lr']:.3g}); {hint}")


def _first_non_finite(module: torch.nn.Module) -> str | None:
    """The first parameter or floating buffer (BatchNorm running statistics) holding inf or NaN, by name."""
    for kind, tensors in (("parameter", module.named_parameters()), ("buffer", module.named_buffers())):
        for name, tensor in tensors:
            if tensor.is_floating_point() and tensor.numel() and not bool(torch.isfinite(tensor).all()):
                return f"{kind} {name}"
    return None


def _lr(trainer: pl.Trainer) -> float:
    try:
        return float(trainer.optimizers[0].param_groups[0]["lr"])
    except (IndexError, KeyError, TypeError, ValueError):
        return math.nan


class DivergenceGuard(pl.Callback):
    def __init__(self) -> None:
        global _last
        _last = None
        self._first_bad_step: torch.Tensor | None = None  # -1 while every loss so far was finite

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        loss = loss.detach()
        if self._first_bad_step is None or self._first_bad_step.device != loss.device:
            self._first_bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
        step = trainer.global_step  # already counts this batch's optimizer step
        bad = ~torch.isfinite(loss).all() & (self._first_bad_step < 0)
        self._first_bad_step = torch.where(bad, torch.full_like(self._first_bad_step, step), self._first_bad_step)
        every = max(1, int(trainer.log_every_n_steps or 1))
        if step % every == 0 or batch_idx + 1 >= trainer.num_training_batches:
            self._check_loss(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._check_loss(trainer)
        where = _first_non_finite(pl_module)
        if trainer.strategy.reduce_boolean_decision(where is not None, all=False):
            self._stop(trainer, where or "a parameter or BatchNorm statistic (on another rank)", trainer.global_step)

    def _check_loss(self, trainer: pl.Trainer) -> None:
        if self._first_bad_step is None:
            return
        step = int(self._first_bad_step.item())
        if trainer.strategy.reduce_boolean_decision(step >= 0, all=False):
            self._stop(trainer, "loss", step if step >= 0 else trainer.global_step)

    def _stop(self, trainer: pl.Trainer, what: str, step: int) -> None:
        global _last
        _last = {"what": what, "step": int(step), "epoch": int(trainer.current_epoch), "lr": _lr(trainer)}
        raise Diverged(dict(_last))
