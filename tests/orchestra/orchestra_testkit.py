"""Helpers shared by the orchestra tests: tiny-run overrides, running the CLI, and a simulated preemption.

This module sits next to the tests (pytest puts tests/orchestra on sys.path), so Hydra ``_target_`` strings such as
``orchestra_testkit.PreemptAfterEpoch`` resolve in-process. Subprocesses get it through PYTHONPATH (see ``run_cli``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ORCHESTRA_SCRIPT = REPO / ".venv" / "bin" / "orchestra"

# Small enough for two slow CPU cores: 4 training steps of 64 images, a 256-image kNN bank, 128 validation images.
TINY = [
    "data.train_limit=256",
    "data.val_limit=128",
    "data.batch_size=64",
    "data.eval_batch_size=256",
    "trainer.max_epochs=1",
    "logger=none",
]

# Narrow heads per method; the shipped widths (up to 1024) dominate the step time on CPU.
SMALL_HEADS = {
    "simclr": ["module.hparams.proj_hidden_dim=64", "module.hparams.proj_dim=32"],
    "nnclr": ["module.hparams.proj_hidden_dim=64", "module.hparams.pred_hidden_dim=64",
              "module.hparams.projection_dim=32", "module.hparams.support_set_size=512"],
    "byol": ["module.hparams.proj_hidden_dim=64", "module.hparams.pred_hidden_dim=64",
             "module.hparams.projection_dim=32"],
    "vicreg": ["module.hparams.proj_dim=64"],
    "barlow_twins": ["module.hparams.proj_dim=64"],
    "supervised": [],
    "mocov2": ["module.hparams.proj_hidden_dim=64", "module.hparams.projection_dim=32",
               "module.hparams.queue_size=128"],
    "mocov3": ["module.hparams.proj_hidden_dim=64", "module.hparams.pred_hidden_dim=64",
               "module.hparams.projection_dim=32"],
    "simsiam": ["module.hparams.proj_hidden_dim=64", "module.hparams.projection_dim=32",
                "module.hparams.pred_hidden_dim=16"],
    "dino": ["module.hparams.head_hidden_dim=64", "module.hparams.bottleneck_dim=32", "module.hparams.prototypes=256"],
    "mae": ["backbone=vit_tiny"],
    "ijepa": ["backbone=vit_tiny"],
    "swav": ["module.hparams.proj_hidden_dim=64", "module.hparams.projection_dim=32", "module.hparams.prototypes=30"],
}


def tiny_overrides(output_root: Path, method: str = "simclr", *extra: str) -> list[str]:
    """Overrides for a seconds-long run of ``method`` writing only under ``output_root``."""
    return [f"method={method}", *TINY, *SMALL_HEADS[method], f"output_root={output_root}", *extra]


def subprocess_env(extra_paths: tuple[str, ...] = (), **extra: str) -> dict[str, str]:
    """The environment for CLI subprocesses: no wandb network or SLURM variables, and this folder plus
    ``extra_paths`` importable (for helper forwards and callbacks named in overrides).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "SLURM_"))}
    paths = [*extra_paths, str(HERE), *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)]
    env.update(WANDB_MODE="offline", PYTHONPATH=os.pathsep.join(paths), **extra)
    return env


def cli_command() -> list[str]:
    """The installed ``orchestra`` console script (falling back to ``python -m orchestra.cli``)."""
    return [str(ORCHESTRA_SCRIPT)] if ORCHESTRA_SCRIPT.exists() else [sys.executable, "-m", "orchestra.cli"]


def run_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cli_command(), *args], cwd=cwd, env=env or subprocess_env(), capture_output=True,
                          text=True, timeout=timeout)


def run_cli_concurrently(runs: dict[str, tuple[list[str], Path, dict[str, str] | None]],
                         timeout: float = 300) -> dict[str, subprocess.CompletedProcess[str]]:
    """Several CLI invocations at once (name -> (args, cwd, env)); most of each is the torch import, which
    overlaps well, so this saves suite time without changing what each process sees.
    """
    processes = {
        name: subprocess.Popen([*cli_command(), *args], cwd=cwd, env=env or subprocess_env(), text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for name, (args, cwd, env) in runs.items()
    }
    results = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=timeout)
        results[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return results


def only_job_dir(output_root: Path) -> Path:
    """The single job directory ``orchestra train`` created under ``output_root``."""
    job_dirs = sorted((Path(output_root) / "train").iterdir())
    assert len(job_dirs) == 1, job_dirs
    return job_dirs[0]


def train_in_process(overrides: list[str]) -> Path:
    """``orchestra train`` through ``orchestra.cli.main``; returns the job directory (one per output_root)."""
    from orchestra.cli import main

    output_root = next(o.split("=", 1)[1] for o in overrides if o.startswith("output_root="))
    assert main(["train", *overrides]) == 0
    return only_job_dir(Path(output_root))


def signal_at(epoch: int, batch: int, signum: int = 12) -> list[str]:
    """Overrides adding a ``kill`` callback that sends ``signum`` (default SIGUSR2) at that batch (SignalAtBatch)."""
    return ["+callbacks.kill._target_=orchestra_testkit.SignalAtBatch", f"+callbacks.kill.epoch={epoch}",
            f"+callbacks.kill.batch={batch}", f"+callbacks.kill.signum={int(signum)}"]


def train_preempted(overrides: list[str]) -> Path:
    """``orchestra train`` that a ``signal_at`` callback stops: asserts the preempted exit code, returns the job dir."""
    import pytest

    from orchestra.cli import main
    from orchestra.jobstate.preemption import PREEMPTED_EXIT_CODE

    output_root = next(o.split("=", 1)[1] for o in overrides if o.startswith("output_root="))
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *overrides])
    assert exit_info.value.code == PREEMPTED_EXIT_CODE
    return only_job_dir(Path(output_root))


def drop_callback(job_dir: Path, name: str = "kill") -> None:
    """Remove a callback from a job dir's config.yaml, so the next start trains on without it."""
    from omegaconf import OmegaConf

    config = OmegaConf.load(Path(job_dir) / "config.yaml")
    del config.callbacks[name]
    (Path(job_dir) / "config.yaml").write_text(OmegaConf.to_yaml(config))


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


class SimulatedPreemption(RuntimeError):
    """Raised by PreemptAfterEpoch: the process dies the way a killed job would, after a checkpoint was saved."""


class PreemptAfterEpoch(pl.Callback):
    """Kills the run at the start of epoch ``epoch`` (0-based), i.e. right after the previous epoch's
    validation and its ``last.ckpt``; the job's own config (max_epochs, schedules) is untouched.
    """

    def __init__(self, epoch: int = 1) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            raise SimulatedPreemption(f"simulated preemption at the start of epoch {self.epoch}")


class SignalAtBatch(pl.Callback):
    """Sends a real signal to this process at the start of batch ``batch`` of epoch ``epoch``, the way SLURM
    (SIGTERM) or submitit (SIGUSR2) would while a step is running.
    """

    def __init__(self, epoch: int = 1, batch: int = 1, signum: int = 12) -> None:
        self.epoch, self.batch, self.signum = epoch, batch, signum

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), self.signum)


class SlowBatches(pl.Callback):
    """Makes every training batch last at least ``seconds`` longer: a member that must outlive its time limit
    whatever the machine's speed (a fast, idle machine finished the work inside the first window).

    With ``first_start_only`` a resumed start runs at full speed, so how many requeues the rest takes does not hinge
    on how early the scheduler happens to warn.
    """

    def __init__(self, seconds: float = 0.3, first_start_only: bool = False) -> None:
        self.seconds = seconds
        self.first_start_only = first_start_only

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if not (self.first_start_only and trainer.ckpt_path is not None):
            time.sleep(self.seconds)
