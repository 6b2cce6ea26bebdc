"""A Lightning WandbLogger whose failures cost only the logging, never the run or its results.json.

wandb can fail at start (bad ``WANDB_*`` settings, an unwritable run folder, no server) or later (a log call on a
broken connection). The first failure prints one warning and turns the logger into a no-op for the rest of the run.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loggers.logger import DummyExperiment, rank_zero_experiment
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from orchestra.compat.lightning_compat import set_wandb_run, wandb_init_kwargs, wandb_run

STEP_METRIC = "trainer/global_step"


class FailSafeWandbLogger(WandbLogger):
    def __init__(self, *, summary_metrics: tuple[str, ...] = (), search_metric: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._search_metric = search_metric  # a search trial's objective: its run's summary gets the trial's end
        if wandb_init_kwargs(self).get("anonymous", False) is None:
            del wandb_init_kwargs(self)["anonymous"]  # passing None makes wandb warn in every job log that it is unused
        self._summary_metrics = summary_metrics
        self._broken = False
        self._closed = False

    def _stop(self, action: str, err: BaseException) -> None:
        if self._broken:
            return
        self._broken = True
        reason = (str(err).strip().splitlines() or [""])[0][:200]
        warnings.warn(f"wandb logging stopped: {action} failed ({type(err).__name__}: {reason}); training continues "
                      f"and results.json is unaffected", RuntimeWarning, stacklevel=3)

    def _guarded(self, action: str, call: Callable[..., Any], *args: Any) -> None:
        if self._broken or self._closed:
            return
        try:
            call(*args)
        except Exception as err:
            self._stop(action, err)

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._broken or self._closed:
            return DummyExperiment()
        if wandb_run(self) is None:
            try:
                set_wandb_run(self, self._start())
            except Exception as err:
                if wandb_init_kwargs(self).get("mode") != "online":
                    self._stop("starting the run", err)
                    return DummyExperiment()
                try:
                    set_wandb_run(self, self._start_offline_instead(err))
                except Exception as offline_err:
                    self._stop("starting the run (online, then offline)", offline_err)
                    return DummyExperiment()
        return wandb_run(self)

    def _start(self) -> Any:
        import wandb

        # finish_previous: a run left open in this process (an earlier in-process job) must not be reused
        run = wandb.init(**wandb_init_kwargs(self), reinit="finish_previous")
        self._define_metrics(run)
        return run

    def _start_offline_instead(self, online_error: Exception) -> Any:
        """A node without internet (common on clusters) still gets a local run that `orchestra sync` uploads."""
        import wandb

        wandb.teardown()  # the failed online start keeps the run id claimed inside wandb's service process
        wandb_init_kwargs(self)["mode"] = "offline"
        run = self._start()
        reason = (str(online_error).strip().splitlines() or [""])[0][:200]
        warnings.warn(f"wandb could not start online ({type(online_error).__name__}: {reason}); logging offline "
                      f"instead, upload later with: orchestra sync SWEEP_DIR", RuntimeWarning, stacklevel=4)
        return run

    def _define_metrics(self, run: Any) -> None:
        run.define_metric(STEP_METRIC)
        run.define_metric("*", step_metric=STEP_METRIC, step_sync=True)
        for name in self._summary_metrics:
            # The report uses the last value (the protocol); the maximum shows how much an earlier stop would give.
            run.define_metric(name, step_metric=STEP_METRIC, summary="max,last")

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        # Lightning hands over the module once, at fit start; its trainer's global_step becomes the x-axis.
        self._module = model

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        # Lightning's own step for epoch-end metrics is one behind global_step, and two behind after a mid-epoch
        # resume; global_step is what results.json records, so both agree for every member, requeued or not.
        trainer = _attached_trainer(getattr(self, "_module", None))
        if trainer is not None:
            step = trainer.global_step
        self._guarded("logging metrics", super().log_metrics, metrics, step)

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        from orchestra.config.compose import redact

        if isinstance(params, Mapping):
            params = redact(dict(params))
        self._guarded("logging hyper-parameters", super().log_hyperparams, params)

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        self._guarded("recording a checkpoint", super().after_save_checkpoint, checkpoint_callback)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if wandb_run(self) is None or isinstance(wandb_run(self), DummyExperiment):
            self._closed = True
            return
        self._guarded("finishing the run", self._finish, status)
        self._closed = True

    def _finish(self, status: str) -> None:
        from orchestra.callbacks.divergence import last_divergence
        from orchestra.jobstate.preemption import stopped_for_requeue

        super().finalize(status)
        run = wandb_run(self)
        divergence = last_divergence()
        if divergence is not None:  # its own state, so a dashboard never reads it as an ordinary crash
            run.summary.update({"state": "DIVERGED", **{f"divergence/{k}": v for k, v in divergence.items()}})
            run.tags = (*run.tags, "diverged")
        elif self._search_metric is not None:
            ending = trial_ending(_attached_trainer(getattr(self, "_module", None)), status, self._search_metric,
                                 stopped_for_requeue())
            run.summary.update(ending)
            if ending["state"] == "PRUNED":
                run.tags = (*run.tags, "pruned")
        if status != "success" and stopped_for_requeue():
            run.mark_preempting()  # the next attempt resumes this run id
        # Finished here rather than at interpreter exit: a job run in-process (tests, `orchestra train`) must not
        # leave the run open for the next one.
        wandb_run(self).finish(exit_code=0 if status == "success" else 1)


def _attached_trainer(module: Any) -> Any:
    """The Trainer ``module`` is attached to, or None (Lightning's public property raises when there is none)."""
    if module is None:
        return None
    try:
        return module.trainer
    except RuntimeError:
        return None


def trial_ending(trainer: Any, status: str, metric: str, requeued: bool) -> dict[str, Any]:
    """A search trial's state as its results.json will say it (COMPLETED, PRUNED, PREEMPTED or FAILED), where the
    pruner stopped it, and the objective at its last validation."""
    pruned = next((c.pruned_at for c in getattr(trainer, "callbacks", None) or []
                   if isinstance(getattr(c, "pruned_at", None), dict)), None)
    value = (getattr(trainer, "callback_metrics", None) or {}).get(metric)
    value = float(value) if value is not None else None
    if status == "success" and pruned:
        ending = {"state": "PRUNED", **{f"search/pruned_at/{k}": v for k, v in pruned.items()}}
    elif status == "success":  # as the job body decides: a step taken and a finite last validation
        trained = getattr(trainer, "global_step", 0) > 0 and value is not None and math.isfinite(value)
        ending = {"state": "COMPLETED" if trained else "FAILED"}
    else:
        ending = {"state": "PREEMPTED" if requeued else "FAILED"}
    if value is not None and ending["state"] in ("COMPLETED", "PRUNED"):
        ending[f"search/objective/{metric}"] = value
    return ending
