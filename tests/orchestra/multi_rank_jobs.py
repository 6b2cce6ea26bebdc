"""Run the real job body (``orchestra.job.run_job``) on several job directories in one process, in order.

Started once per rank by ``launch_ranks`` with the variables torchrun would set (RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR/PORT of a store the test process hosts, as torchrun's agent does), so Lightning joins the ranks instead
of spawning its own: one interpreter start and one process group serve several members, which keeps the distributed
tests short. A member that fails (or is preempted on purpose) prints one line and the next member runs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl


class PreemptOnceAtEpoch(pl.Callback):
    """Stops every rank at the start of epoch ``epoch`` (after the previous epoch's checkpoint), the first time
    only: a marker file per rank remembers it, so the rerun of the same job directory trains to the end.
    """

    def __init__(self, marker: str, epoch: int = 1) -> None:
        self.marker, self.epoch = marker, epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        marker = Path(f"{self.marker}.rank{trainer.global_rank}")
        if trainer.current_epoch == self.epoch and not marker.exists():
            marker.touch()
            raise RuntimeError(f"simulated preemption at the start of epoch {self.epoch}")


class SignalOneRank(pl.Callback):
    """Sends a real SIGUSR2 (submitit's preemption signal) to rank ``rank`` alone at batch ``batch`` of epoch
    ``epoch``, the first time only (marker file): the other rank never sees a signal and must still save with it.
    """

    def __init__(self, marker: str, rank: int = 1, epoch: int = 1, batch: int = 1) -> None:
        self.marker, self.rank, self.epoch, self.batch = marker, rank, epoch, batch

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        here = (trainer.global_rank, trainer.current_epoch, batch_idx) == (self.rank, self.epoch, self.batch)
        if here and not Path(self.marker).exists():
            Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGUSR2)


def main(job_dirs: list[str]) -> int:
    from orchestra.job.body import run_job

    failures = 0
    for job_dir in job_dirs:
        try:
            run_job(job_dir)
        except BaseException as err:  # noqa: BLE001 - a simulated preemption is one of the expected outcomes
            failures += 1
            print(f"member {job_dir} stopped: {type(err).__name__}: {err}", flush=True)
    return 0 if failures == 0 else 3


# How a resume test interrupts a member: every rank stops after epoch 1, or rank 1 alone gets SIGUSR2 mid-epoch.
STOPS = {"stopped": {"_target_": "multi_rank_jobs.PreemptOnceAtEpoch", "epoch": 1},
         "signalled": {"_target_": "multi_rank_jobs.SignalOneRank", "rank": 1, "epoch": 1, "batch": 1}}


def resume_order(job_dirs: dict[tuple[str, str], Path]) -> list[Path]:
    """Job dirs in run order; a stopped or signalled member runs twice in a row, the second start resuming it."""
    order: list[Path] = []
    for (_, kind), job_dir in job_dirs.items():
        order += [job_dir] * (2 if kind in STOPS else 1)
    return order


def assert_interrupted_ranks_resumed(logs: list[str], strategy_class: str) -> None:
    """Rank 1 alone received the signal, yet rank 0 saved with it at the same batch, and the rerun resumed."""
    assert f"rank 1 of 2 ({strategy_class})" in logs[1] and "resuming from" in logs[0]
    assert "received SIGUSR2" in logs[1] and "received SIGUSR2" not in logs[0]
    assert "saved" in logs[0] and "after 1 batches" in logs[0]


def initial_state(job_dir: Path) -> dict:
    """A job's parameters before training: same seed, same construction order as ``orchestra.job``."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from orchestra.data.datamodule import build_datamodule

    cfg = OmegaConf.load(Path(job_dir) / "config.yaml")
    pl.seed_everything(int(cfg.seed), verbose=False)
    build_datamodule(OmegaConf.to_container(cfg.data, resolve=True), int(cfg.seed)).setup("fit")
    return instantiate(cfg.module, _convert_="all").state_dict()


def free_port() -> int:
    """A port that was free a moment ago. Racy (another process may take it before the ranks bind it): kept only
    for tests not yet moved to ``rendezvous_store.HostedStore``, which start_ranks uses."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ranks(job_dirs: list[Path], world: int, env: dict[str, str]) -> list[subprocess.Popen]:
    """Start ``main(job_dirs)`` in ``world`` processes (one per rank). Ranks meet at a store this process hosts on
    a port it bound itself (no free-port race); the store lives as long as the returned processes do."""
    from rendezvous_store import HostedStore

    store = HostedStore() if world > 1 else None
    processes = []
    for rank in range(world):
        rank_env = {**env, "OMP_NUM_THREADS": "1"}
        if store is not None:
            rank_env.update(store.env(), WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), NODE_RANK="0")
        process = subprocess.Popen([sys.executable, __file__, *map(str, job_dirs)], env=rank_env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        process.rendezvous = store  # the server must outlive every rank's use of it
        processes.append(process)
    return processes


def outputs(processes: list[subprocess.Popen], timeout: float = 300) -> list[str]:
    """Each rank's output (stdout and stderr), once every rank has ended."""
    try:
        return [process.communicate(timeout=timeout)[0] for process in processes]
    except subprocess.TimeoutExpired:
        for process in processes:  # ranks waiting on each other would otherwise outlive the test
            process.kill()
        raise AssertionError(f"ranks still running after {timeout} s (waiting on each other?)") from None


def launch_ranks(job_dirs: list[Path], world: int, env: dict[str, str], timeout: float = 300) -> list[str]:
    return outputs(start_ranks(job_dirs, world, env), timeout)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main(sys.argv[1:]))
