"""Early stopping of a search trial: report the objective at every validation to the study, stop when it prunes.

The job body adds this callback only when the config carries ``search.trial`` (a worker of ``orchestra.search``
wrote it). Rank 0 alone talks to the study (one journal writer per trial) and broadcasts its answer, so every rank
stops after the same validation. A pruned trial stops cleanly: its last validation is recorded and checkpointed as
usual, the body writes state PRUNED with ``pruned_at`` {step, epoch}, and the worker tells the study.

The step reported is the epoch index, so ``search.pruner.warmup_steps`` and ``min_resource`` count validations of
an epoch-validated run. A resumed trial reports an epoch it reported before; Optuna keeps the first value.
"""

from __future__ import annotations

import math
from typing import Any

import lightning.pytorch as pl


class SearchPruning(pl.Callback):
    def __init__(self, sweep_dir: str, number: int, metric: str, settings: dict[str, Any]) -> None:
        self.sweep_dir, self.number, self.metric, self.settings = sweep_dir, int(number), metric, settings
        self.pruned_at: dict[str, int] | None = None
        self._trial: Any = None

    @classmethod
    def from_config(cls, cfg: Any) -> SearchPruning:
        from omegaconf import OmegaConf

        settings = OmegaConf.to_container(cfg.search, resolve=True)
        trial = settings["trial"]
        return cls(str(trial["sweep_dir"]), int(trial["number"]), str(settings["objective"]["metric"]), settings)

    def trial(self) -> Any:
        """The study's running trial this job is (opened on first use, on rank 0 only)."""
        if self._trial is None:
            import optuna

            from orchestra.search.study import load, storage

            journal = storage(self.sweep_dir)
            study = load(self.sweep_dir, self.settings, journal=journal)
            trial_id = journal.get_trial_id_from_study_id_trial_number(
                journal.get_study_id_from_name(study.study_name), self.number)
            self._trial = optuna.trial.Trial(study, trial_id)
        return self._trial

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        if trainer.is_global_zero:
            value = trainer.callback_metrics.get(self.metric)
            if value is not None and math.isfinite(float(value)):
                trial = self.trial()
                trial.report(float(value), step=int(trainer.current_epoch))
                prune = bool(trial.should_prune())
        prune = bool(trainer.strategy.broadcast(prune, src=0))
        if prune and not trainer.should_stop:
            self.pruned_at = {"step": int(trainer.global_step), "epoch": int(trainer.current_epoch)}
            trainer.should_stop = True
            if trainer.is_global_zero:
                print(f"pruned by the search at epoch {trainer.current_epoch + 1} (step {trainer.global_step}): "
                      f"{self.metric} below what the pruner keeps", flush=True)
