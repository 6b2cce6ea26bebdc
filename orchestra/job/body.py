"""The job body: a job directory's config.yaml -> seeded Trainer.fit -> results.json.

Run as ``python -m orchestra.job JOB_DIR`` by launchers, or through ``run_job`` in-process. A job started again in
the same directory resumes from ``checkpoints/last.ckpt`` and keeps counting attempts and wall time.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from launch.atomic import write_json
from orchestra.errors import UserError
from orchestra.jobstate.costs import attempt_costs
from orchestra.jobstate.job_dir import JobDir
from orchestra.jobstate.results import EVALUATION_PROTOCOL, Results, UnreadableResults, read_results


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _fit(cfg: DictConfig, job_dir: JobDir, results: Results) -> Results:
    import lightning.pytorch as pl
    from hydra.utils import instantiate

    from orchestra.data.datamodule import build_datamodule
    from orchestra.evaluation.floors import knn_floors
    from orchestra.jobstate.checkpointing import LastCheckpoint
    from orchestra.jobstate.history import ValidationHistory
    from orchestra.jobstate.preemption import PreemptionGuard
    from orchestra.tracking.quiet_logs import quiet_lightning

    quiet_lightning()
    pl.seed_everything(int(cfg.seed), verbose=False)
    datamodule = build_datamodule(OmegaConf.to_container(cfg.data, resolve=True), int(cfg.seed))
    datamodule.setup("fit")
    from orchestra.distributed.strategies import build_strategy
    from orchestra.model.lr_scaling import apply_lr_scaling, describe

    results["optim"] = apply_lr_scaling(cfg)
    print(describe(results["optim"]), flush=True)
    module = instantiate(cfg.module, _convert_="all")
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
    strategy, module.parallel_plan = build_strategy(OmegaConf.to_container(cfg.strategy), trainer_args, module,
                                                    global_batch=int(cfg.data.batch_size))
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    history = ValidationHistory()
    last = job_dir.last_checkpoint
    with PreemptionGuard(last) as guard:  # the signal handlers it borrows are given back however this block ends
        trainer = _trainer(cfg, job_dir.path, trainer_args, strategy,
                           [*callbacks, history, guard, LastCheckpoint(job_dir.checkpoints)])
        if trainer.world_size > 1:
            print(f"rank {trainer.global_rank} of {trainer.world_size} ({type(trainer.strategy).__name__})",
                  flush=True)
        if "floors" not in results and is_rank_zero():
            results["floors"] = knn_floors(module, datamodule)
        if last.exists():
            print(f"resuming from {last}", flush=True)
        # Distributed strategies re-seed inside fit before callbacks build the probe; seeding here too gives every
        # strategy the same probe initialisation (1 process and 2 ranks start identical).
        pl.seed_everything(int(cfg.seed), verbose=False)
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last.exists() else None)
        finally:
            results["history"] = history.records
    results["metrics"] = history.records[-1]["metrics"] if history.records else {}
    return results


def _trainer(cfg: DictConfig, job_dir: Path, trainer_args: dict[str, Any], strategy: Any,
             callbacks: list[Any]) -> Any:
    import lightning.pytorch as pl

    from orchestra.jobstate.checkpointing import AtomicCheckpointIO
    from orchestra.tracking.loggers import build_logger

    plugins: list[Any] = [AtomicCheckpointIO()]
    if "SLURM_JOB_ID" in os.environ:
        from lightning.pytorch.plugins.environments import SLURMEnvironment

        plugins.append(SLURMEnvironment(auto_requeue=False))  # submitit owns requeueing; two owners would fight
    return pl.Trainer(
        **trainer_args,
        strategy=strategy,
        default_root_dir=str(job_dir),
        callbacks=callbacks,
        logger=build_logger(cfg, job_dir),
        plugins=plugins,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,  # our batch sampler shards each global batch itself
    )


def _is_preemption(err: BaseException) -> bool:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from orchestra.jobstate.preemption import Preempted, stopped_for_requeue

    # submitit's requeue handler ends the process with SystemExit from inside our batch-start save
    return isinstance(err, Preempted | SIGTERMException) or (isinstance(err, SystemExit) and stopped_for_requeue())


def is_rank_zero() -> bool:
    """Decided from the environment before any process group exists: only rank 0 writes job-directory files."""
    return all(os.environ.get(var, "0") == "0" for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "NODE_RANK"))


def _previous_results(path: Path) -> Results:
    """Results of earlier attempts; an unreadable file is moved aside (kept, never overwritten) and the job goes on."""
    try:
        return read_results(path)
    except UnreadableResults as err:
        if not is_rank_zero():
            return {}
        aside = _aside_path(path)
        os.replace(path, aside)
        print(f"warning: {err}; moved it to {aside.name} and started a new results file (the checkpoint, if any, "
              f"still resumes training)", flush=True)
        return {}


def _aside_path(path: Path) -> Path:
    """A name beside ``path`` that no earlier moved-aside file has."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate, n = path.with_name(f"{path.name}.unreadable-{stamp}"), 1
    while candidate.exists():
        candidate, n = path.with_name(f"{path.name}.unreadable-{stamp}-{n}"), n + 1
    return candidate


def run_job(path: Path | str) -> Results:
    job_dir = JobDir(Path(path).resolve())
    if not job_dir.is_job_dir():
        raise UserError(f"{job_dir.path} is not a job directory (no config.yaml); create one with orchestra "
                        f"train/sweep")
    cfg = OmegaConf.load(job_dir.config)
    from orchestra.jobstate.preemption import reset_stopped_for_requeue

    reset_stopped_for_requeue()
    results = _previous_results(job_dir.results)
    results.update(state="RUNNING", attempts=results.get("attempts", 0) + 1, method=cfg.get("method_name"),
                   started_at=_now(), evaluation=EVALUATION_PROTOCOL, job_dir=str(job_dir.path))
    results.pop("error", None)
    writer = is_rank_zero()
    if writer:
        write_json(job_dir.results, results)
    started = time.monotonic()
    wall_before = float(results.get("wall_time_s", 0.0))
    try:
        _fit(cfg, job_dir, results)
        results["state"] = "COMPLETED"
    except BaseException as err:
        if _is_preemption(err):
            results["state"] = "PREEMPTED"  # last.ckpt is safe; the scheduler (or `orchestra resume`) restarts it
            raise
        results["state"] = "FAILED"
        results["error"] = str(err) if isinstance(err, UserError | ValueError) else f"{type(err).__name__}: {err}"
        raise
    finally:
        results["wall_time_s"] = round(wall_before + time.monotonic() - started, 3)
        results["finished_at"] = _now()
        try:
            results.update(attempt_costs(OmegaConf.to_container(cfg.trainer, resolve=True),
                                         time.monotonic() - started, results))
        except Exception as err:  # bookkeeping must never hide the real outcome or cost the results file
            results["costs_error"] = f"{type(err).__name__}: {err}"
        if writer:
            write_json(job_dir.results, results)
    return results


def main(argv: list[str] | None = None) -> int:
    from method_zoo import MethodError

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m orchestra.job JOB_DIR", file=sys.stderr)
        return 2
    try:
        run_job(args[0])
    except (UserError, MethodError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    except SystemExit as exit_:
        from orchestra.jobstate.preemption import PREEMPTED_EXIT_CODE

        return PREEMPTED_EXIT_CODE if _is_preemption(exit_) else int(exit_.code or 0)
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
