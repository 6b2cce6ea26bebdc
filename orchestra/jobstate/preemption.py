"""Saving before the scheduler takes the machine away, and handing the requeue to submitit.

Requeue has one owner. submitit delivers SIGUSR2 (preemption or time limit) and owns the requeue; SLURM's own
``scontrol requeue`` delivers SIGTERM and requeues by itself. Either way the signal handler here only records
the signal: a checkpoint written from inside a handler can catch the model halfway through an optimizer step.
At the start of the next batch — after Lightning has finished the previous one, learning-rate step included — the
callback writes ``last.ckpt`` (with the loader's position in the epoch), then calls submitit's handler for SIGUSR2
(which requeues and exits) or exits for SIGTERM. Because this handler is installed first, Lightning leaves SIGTERM
to it instead of raising its own exception without a checkpoint.

SIGINT (Ctrl+C, or ``orchestra sweep`` passing on its own interruption) takes the same path: the member saves at
the next batch boundary and ends INTERRUPTED, resumable at once, instead of Lightning's FAILED ``SystemExit: 1``.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from orchestra.distributed.rank_vote import SignalVote

PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: "try again later"; the launcher treats it as not-failed
GUARDED_SIGNALS = (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT)
_stopped_for_requeue = False


def reset_stopped_for_requeue() -> None:
    """A new job body in the same process starts unpreempted (tests and the SLURM retry loop run several)."""
    global _stopped_for_requeue
    _stopped_for_requeue = False


def stopped_for_requeue() -> bool:
    """True once a guard has saved its checkpoint because of a signal (a Ctrl+C exit is not a preemption)."""
    return _stopped_for_requeue


class Preempted(SystemExit):
    """Raised after the checkpoint is safe; carries the signal for the results file."""

    def __init__(self, signum: int) -> None:
        super().__init__(PREEMPTED_EXIT_CODE)
        self.signum = signum

    @property
    def state(self) -> str:
        return "INTERRUPTED" if self.signum == signal.SIGINT else "PREEMPTED"


class PreemptionGuard(pl.Callback):
    def __init__(self, checkpoint_path: Path, signals: tuple[int, ...] = GUARDED_SIGNALS) -> None:
        self.checkpoint_path = Path(checkpoint_path)
        self.received: int | None = None
        self.position: tuple[int, int] = (0, 0)  # (epoch, batches finished in it), kept in every checkpoint
        self.resume_at: tuple[int, int] | None = None
        self.vote = SignalVote()
        self.previous: dict[int, Any] = {}
        for signum in signals:
            self.previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._record)
        # The SLURM launcher starts the body with SIGUSR2 blocked: a warning sent while the body was still starting
        # up has been held pending since, and is recorded the moment it is unblocked here, never lost.
        self.blocked = set(signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)) & set(signals)

    def _record(self, signum: int, frame: Any) -> None:
        print(f"received {signal.Signals(signum).name}: checkpointing at the next batch boundary", flush=True)
        self.received = signum

    def state_dict(self) -> dict[str, Any]:
        return {"position": list(self.position)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.resume_at = tuple(state_dict["position"])

    def on_train_start(self, trainer: pl.Trainer, pl_module) -> None:
        self.vote.start(trainer.world_size)
        # The sampler, not Lightning, skips the finished batches: Lightning only restores a loader's position when
        # the loader was built after the checkpoint was read, and the LR schedule's step count builds it earlier.
        sampler = getattr(trainer.train_dataloader, "sampler", None)
        if self.resume_at is not None and hasattr(sampler, "resume_at"):
            sampler.resume_at = self.resume_at
        self.resume_at = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module, batch, batch_idx: int) -> None:
        self.position = (trainer.current_epoch, batch_idx)
        # Several ranks save together or not at all (see orchestra.distributed.rank_vote). A signal that lands while
        # this rank waits in the vote sets self.received after it cast its vote: keep it for the next batch.
        signum = self.vote.agreed_signal(self.received)
        if signum is None:
            return
        global _stopped_for_requeue
        trainer.save_checkpoint(str(self.checkpoint_path))
        _stopped_for_requeue = True
        print(f"saved {self.checkpoint_path} at epoch {trainer.current_epoch} after {batch_idx} batches", flush=True)
        self.received = None
        handler = self.previous.get(signum)
        if signum == signal.SIGUSR2 and callable(handler):
            sys.stdout.flush()
            handler(signum, None)  # submitit: pickles the job, requeues it and exits
        raise Preempted(signum)

    def restore(self) -> None:
        # A signal that came in blocked is ignored from here on, not handed back to its default action (which ends
        # the process): threads started during training do not block it, and a late warning must not kill a body
        # that has finished its work.
        for signum, handler in self.previous.items():
            signal.signal(signum, signal.SIG_IGN if signum in self.blocked else handler)

    def __enter__(self) -> PreemptionGuard:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.restore()
