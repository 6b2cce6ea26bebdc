"""The job body: a job directory's config.yaml -> seeded Trainer.fit -> results.json.

Run as ``python -m orchestra.job JOB_DIR`` by launchers, or through ``run_job`` in-process. A job started again in
the same directory resumes from ``checkpoints/last.ckpt`` and keeps counting attempts and wall time.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from launch.atomic import write_json
from orchestra.errors import UserError
from orchestra.job.outcome import (
    DIVERGED_EXIT_CODE,
    interrupts_held,
    is_preemption,
    outcome,
    stops_at_terminate,
)
from orchestra.jobstate.costs import attempt_costs
from orchestra.jobstate.job_dir import JobDir, unreadable_aside
from orchestra.jobstate.results import (
    EVALUATION_PROTOCOL,
    Results,
    UnreadableResults,
    evaluation_protocol,
    read_results,
)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _fit(cfg: DictConfig, job_dir: JobDir, results: Results, save: Callable[[], None]) -> Results:
    import lightning.pytorch as pl
    from hydra.utils import instantiate

    from orchestra.callbacks.divergence import DivergenceGuard
    from orchestra.callbacks.validation_interval import ValidateLastEpoch
    from orchestra.data.datamodule import build_datamodule
    from orchestra.evaluation.floors import knn_floors
    from orchestra.jobstate.checkpointing import LastCheckpoint
    from orchestra.jobstate.history import ValidationHistory, merge_history
    from orchestra.jobstate.preemption import PreemptionGuard
    from orchestra.jobstate.resume_point import resume_point
    from orchestra.tracking.quiet_logs import quiet_lightning

    quiet_lightning()
    pl.seed_everything(int(cfg.seed), verbose=False)
    datamodule = build_datamodule(OmegaConf.to_container(cfg.data, resolve=True), int(cfg.seed),
                                  accelerator=str(cfg.trainer.get("accelerator", "auto")))  # data.pipeline=auto
    datamodule.setup("fit")
    results["evaluation"] = _protocol(cfg, len(datamodule.train))
    from orchestra.distributed.strategies import build_strategy
    from orchestra.model.lr_scaling import apply_lr_scaling, describe

    results["optim"] = apply_lr_scaling(cfg)
    print(describe(results["optim"]), flush=True)
    module = _instantiate_module(cfg)
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
    strategy, module.parallel_plan = build_strategy(OmegaConf.to_container(cfg.strategy), trainer_args, module,
                                                    global_batch=int(cfg.data.batch_size))
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    earlier = list(results.get("history") or [])

    def record(records: list[dict[str, Any]]) -> None:  # after every validation: a later kill loses nothing
        results["history"] = merge_history(earlier, records)
        results["metrics"] = results["history"][-1]["metrics"]
        save()

    history = ValidationHistory(attempt=int(results["attempts"]), on_record=record)
    pruning = _search_pruning(cfg)  # a search trial reports each validation to its study, which may prune it
    callbacks += [pruning] if pruning is not None else []
    start = resume_point(job_dir, is_rank_zero())
    with PreemptionGuard(job_dir.last_checkpoint) as guard:  # the signal handlers it borrows are given back
        trainer = _trainer(cfg, job_dir.path, trainer_args, strategy,
                           [*callbacks, ValidateLastEpoch(), DivergenceGuard(), history, guard,
                            LastCheckpoint(job_dir.checkpoints)])
        if trainer.world_size > 1:
            print(f"rank {trainer.global_rank} of {trainer.world_size} ({type(trainer.strategy).__name__})",
                  flush=True)
        if "floors" not in results and is_rank_zero():
            results["floors"] = knn_floors(module, datamodule, bank_size=_bank_size(cfg))
        if start is not None:
            print(f"resuming from {start}", flush=True)
        # Distributed strategies re-seed inside fit before callbacks build the probe; seeding here too gives every
        # strategy the same probe initialisation (1 process and 2 ranks start identical).
        pl.seed_everything(int(cfg.seed), verbose=False)
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(start) if start is not None else None)
        finally:
            results["history"] = merge_history(earlier, history.records)
            results["steps"] = int(trainer.global_step)
            if pruning is not None and pruning.pruned_at is not None:
                results["pruned_at"] = pruning.pruned_at
    _check_trained(results)
    results["metrics"] = results["history"][-1]["metrics"]
    return results


def _bank_size(cfg: DictConfig) -> int | None:
    return ((cfg.get("callbacks") or {}).get("knn") or {}).get("bank_size")


def _protocol(cfg: DictConfig, train_images: int) -> dict[str, str]:
    """The evaluation protocol with this job's kNN bank (all or a subset of the training images) and interval."""
    return evaluation_protocol(train_images, _bank_size(cfg), cfg.trainer.get("check_val_every_n_epoch", 1))


def _search_pruning(cfg: DictConfig) -> Any:
    trial = (cfg.get("search") or {}).get("trial")
    if not trial:
        return None
    from orchestra.callbacks.search_pruning import SearchPruning

    return SearchPruning.from_config(cfg)


def _instantiate_module(cfg: DictConfig) -> Any:
    from hydra.utils import instantiate

    from method_zoo import MethodError

    try:
        return instantiate(cfg.module, _convert_="all")
    except Exception as err:  # Hydra wraps our one-line errors (an unknown forward) in its own traceback
        if isinstance(err.__cause__, UserError | MethodError):
            raise err.__cause__ from None
        raise


def _check_trained(results: Results) -> None:
    """A run that took no optimizer step, or whose last validation is not finite, did not train: never COMPLETED."""
    if not results.get("steps"):
        raise UserError("training took no optimizer step (no training batch: data.train_limit and "
                        "data.batch_size leave none, or trainer.max_epochs/max_steps is 0); fix them and run again")
    last = results["history"][-1]["metrics"] if results.get("history") else None
    if not last:
        raise UserError("training ended without a validation, so there is nothing to report; run at least one "
                        "epoch (trainer.max_epochs) with validation")
    bad = sorted(k for k, v in last.items() if not math.isfinite(v))
    if bad:
        raise UserError(f"the last validation is not finite ({', '.join(bad)}); the run did not train properly")


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
        aside = unreadable_aside(path)
        os.replace(path, aside)
        print(f"warning: {err}; moved it to {aside.name} and started a new results file (the checkpoint, if any, "
              f"still resumes training)", flush=True)
        return {}


def run_job(path: Path | str) -> Results:
    job_dir = JobDir(Path(path).resolve())
    if not job_dir.is_job_dir():
        raise UserError(f"{job_dir.path} is not a job directory (no config.yaml); create one with orchestra "
                        f"train/sweep")
    cfg = OmegaConf.load(job_dir.config)
    from orchestra.jobstate.preemption import reset_stopped_for_requeue

    reset_stopped_for_requeue()
    results = _previous_results(job_dir.results)
    if results.get("state") in ("COMPLETED", "PRUNED"):  # only ever replaced by a more advanced state
        print(f"{job_dir.path} already {results['state']}; nothing to run (its results and checkpoints are kept)",
              flush=True)
        return results
    results.update(state="RUNNING", attempts=_count(results.get("attempts")) + 1, method=cfg.get("method_name"),
                   started_at=_now(), evaluation=EVALUATION_PROTOCOL, job_dir=str(job_dir.path))
    for stale in ("error", "divergence"):
        results.pop(stale, None)
    writer = is_rank_zero()

    def save() -> None:
        if writer:
            write_json(job_dir.results, results)

    save()
    started = time.monotonic()
    wall_before = float(results.get("wall_time_s") or 0.0)
    try:
        with stops_at_terminate():
            _fit(cfg, job_dir, results, save)
        results["state"] = "PRUNED" if results.get("pruned_at") else "COMPLETED"  # a search stopped it early
    except BaseException as err:
        results["state"], results["error"] = outcome(err)
        if results["state"] == "DIVERGED":
            results["divergence"] = getattr(err, "details", {})
            print(f"DIVERGED: {err}", flush=True)
            return results
        if results["state"] in ("PREEMPTED", "INTERRUPTED"):
            results.pop("error")  # last.ckpt is safe; the scheduler (or `orchestra resume`) restarts it
        raise
    finally:
        with interrupts_held(results.get("state") == "INTERRUPTED"):
            results["wall_time_s"] = round(wall_before + time.monotonic() - started, 3)
            results["finished_at"] = _now()
            try:
                results.update(attempt_costs(OmegaConf.to_container(cfg.trainer, resolve=True),
                                             time.monotonic() - started, results))
            except Exception as err:  # bookkeeping must never hide the real outcome or cost the results file
                results["costs_error"] = f"{type(err).__name__}: {err}"
            save()
    return results


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def main(argv: list[str] | None = None) -> int:
    from method_zoo import MethodError
    from orchestra.jobstate.preemption import PREEMPTED_EXIT_CODE

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m orchestra.job JOB_DIR", file=sys.stderr)
        return 2
    from orchestra.job.parent import stop_with_parent

    try:
        stop_with_parent()
        results = run_job(args[0])
    except (UserError, MethodError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("interrupted before training started; the member resumes as it was", flush=True)
        return PREEMPTED_EXIT_CODE
    except SystemExit as exit_:
        return PREEMPTED_EXIT_CODE if is_preemption(exit_) else int(exit_.code or 0)
    except Exception:
        traceback.print_exc()
        return 1
    return DIVERGED_EXIT_CODE if results.get("state") == "DIVERGED" else 0


if __name__ == "__main__":
    sys.exit(main())
