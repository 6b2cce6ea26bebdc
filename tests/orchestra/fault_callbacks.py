"""Faults on demand, injected into a member through its config (``+callbacks.<name>._target_=fault_callbacks.X``),
so that a test's fault lands at a fixed point of training instead of whenever a poller happened to notice a file.

- ``FailForSeed``: a real training failure for one seed, beside completed members of the same configuration.
- ``KillSelfOnce``: SIGKILL of the member's own training process at a fixed batch, as the OOM killer would.
- ``AwaitSignalOnce``: at a fixed batch, optionally ask the scheduler for something (``scontrol requeue``,
  ``scancel --signal=USR2``), then hold the batch until the signal that the scheduler sends has reached the job's
  preemption guard, so the guard saves at exactly that batch; with no command it simply waits there for the
  scheduler's own warning (a time limit).

"Once" means the first time a member reaches that batch: a marker file in the member's job directory (the Trainer's
``default_root_dir``) remembers it, so the retried, requeued or resumed start trains on to the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import lightning.pytorch as pl


class FailForSeed(pl.Callback):
    """Raises at the start of training in the member whose ``seed`` equals ``fail_for``; others train normally."""

    def __init__(self, seed: int, fail_for: int) -> None:
        self.seed, self.fail_for = int(seed), int(fail_for)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.seed == self.fail_for:
            raise RuntimeError(f"injected training failure for seed {self.seed}")


class _OnceAtBatch(pl.Callback):
    """Calls ``fire`` at the start of batch ``batch`` of epoch ``epoch`` the first time the member gets there.

    ``armed=false`` makes the callback inert, so one sweep can hold a faulted member and its untouched twin that
    differ in nothing that affects training (``+callbacks.x.armed=true,false``).
    """

    marker_name = "fault"

    def __init__(self, epoch: int = 1, batch: int = 1, armed: bool = True) -> None:
        self.epoch, self.batch, self.armed = int(epoch), int(batch), bool(armed)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if not self.armed or (trainer.current_epoch, batch_idx) != (self.epoch, self.batch):
            return
        marker = Path(trainer.default_root_dir) / f".{self.marker_name}-fired"
        try:
            with open(marker, "x"):  # exclusive create: fires at most once per job directory
                pass
        except FileExistsError:
            return
        print(f"fault_callbacks: {self.marker_name} at epoch {self.epoch} batch {self.batch}", flush=True)
        self.fire(trainer)

    def fire(self, trainer: pl.Trainer) -> None:
        raise NotImplementedError


class KillSelfOnce(_OnceAtBatch):
    """SIGKILL to this (the training) process: no handler runs, nothing is saved, the last checkpoint is the one
    the previous epoch's validation wrote."""

    marker_name = "sigkill"

    def fire(self, trainer: pl.Trainer) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


def _preemption_guard(trainer: pl.Trainer):
    """The job body's guard (orchestra.jobstate.preemption.PreemptionGuard): it records the scheduler's signal."""
    guards = [c for c in trainer.callbacks if type(c).__name__ == "PreemptionGuard"]
    if len(guards) != 1:
        raise RuntimeError(f"expected one PreemptionGuard among the callbacks, found {len(guards)}")
    return guards[0]


class AwaitSignalOnce(_OnceAtBatch):
    """Runs ``command`` (arguments go through ``os.path.expandvars``, so ``$SLURM_JOB_ID`` works), then holds this
    batch until the preemption guard has received ``signal`` (a name: SIGUSR2, SIGTERM), at most ``timeout``
    seconds. Python runs the guard's handler between the sleeps below, so when this returns the guard saves at this
    very batch. A signal that arrived before this batch is left to the guard, which then saves earlier.
    """

    marker_name = "await-signal"

    def __init__(self, epoch: int = 1, batch: int = 1, signal: str = "SIGUSR2", command: list[str] | None = None,
                 timeout: float = 180, armed: bool = True) -> None:
        super().__init__(epoch, batch, armed)
        self.signal_name, self.command, self.timeout = signal, list(command or []), float(timeout)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if _preemption_guard(trainer).received is not None:
            return  # the scheduler was quicker (a warning during start-up): the guard saves now, not at our batch
        super().on_train_batch_start(trainer, pl_module, batch, batch_idx)

    def fire(self, trainer: pl.Trainer) -> None:
        guard = _preemption_guard(trainer)
        if self.command:
            subprocess.run([os.path.expandvars(arg) for arg in self.command], check=True, timeout=60)
        deadline = time.monotonic() + self.timeout
        while guard.received is None and time.monotonic() < deadline:
            time.sleep(0.05)
        expected = getattr(signal, self.signal_name)
        if guard.received != expected:
            raise RuntimeError(f"waited {self.timeout:.0f} s at epoch {self.epoch} batch {self.batch} for "
                               f"{self.signal_name}; the guard holds {guard.received}")
        print(f"fault_callbacks: {self.signal_name} arrived; the guard saves at this batch", flush=True)


class InterruptSweepOnce(pl.Callback):
    """Sends ``signal`` to the ``orchestra sweep`` process (this member's parent) once per sweep — at the start of
    batch ``batch`` of epoch ``epoch`` (``when="batch"``) or from inside the first checkpoint save (``when=
    "checkpoint"``, so the sweep's SIGINT reaches the member while it writes) — then holds there until the sweep
    has passed SIGINT on to this member's preemption guard."""

    def __init__(self, signal: str = "SIGINT", when: str = "batch", epoch: int = 1, batch: int = 1,
                 timeout: float = 120) -> None:
        self.signal_name, self.when, self.epoch, self.batch, self.timeout = signal, when, epoch, batch, timeout

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if self.when == "batch" and (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            self._fire(trainer)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        if self.when == "checkpoint":
            self._fire(trainer)

    def _fire(self, trainer: pl.Trainer) -> None:
        marker = Path(trainer.default_root_dir).parent / ".interrupt-fired"
        try:
            with open(marker, "x"):  # once per sweep: a second signal would only make the sweep say it waits
                pass
        except FileExistsError:
            return
        guard = _preemption_guard(trainer)
        print(f"fault_callbacks: {self.signal_name} to the sweep process ({self.when})", flush=True)
        os.kill(os.getppid(), getattr(signal, self.signal_name))
        deadline = time.monotonic() + self.timeout
        while guard.received is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if guard.received != signal.SIGINT:
            raise RuntimeError(f"the sweep did not pass the interruption on within {self.timeout:.0f} s")
