"""The study of a search sweep: Optuna's journal storage in the sweep directory, its sampler and its pruner.

Storage: ``JournalStorage(JournalFileBackend(<sweep>/study.journal))`` (``optuna.storages.journal``, Optuna >= 4.0).
An append-only log of operations on the shared file system, so no database server sits beside SLURM and SQLite's
``fcntl`` locks (broken on many NFS mounts) are never used. Its lock is ``JournalFileOpenLock``: an ``O_CREAT |
O_EXCL`` lock file, atomic on NFSv3 and later and on Lustre (the default symlink lock is fine on POSIX file
systems too, but some Lustre and SMB mounts refuse symlinks). A lock left by a killed process is broken after a
grace period.

Imports Optuna (not torch): ``orchestra status`` reads the study through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestra.errors import UserError

STUDY_NAME = "search"
JOURNAL = "study.journal"
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "successive_halving", "hyperband", "none")
DIRECTIONS = ("maximize", "minimize")


def storage(sweep_dir: Path | str) -> Any:
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

    path = str(Path(sweep_dir) / JOURNAL)
    return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path, grace_period=30)))


def check_settings(settings: dict[str, Any]) -> None:
    """One line for a search section that cannot run, before anything is written."""
    sampler = str(settings.get("sampler"))
    if sampler not in SAMPLERS:
        raise UserError(f"unknown search.sampler '{sampler}'; samplers: {', '.join(SAMPLERS)}")
    pruner = str((settings.get("pruner") or {}).get("name"))
    if pruner not in PRUNERS:
        raise UserError(f"unknown search.pruner.name '{pruner}'; pruners: {', '.join(PRUNERS)}")
    direction = str((settings.get("objective") or {}).get("direction"))
    if direction not in DIRECTIONS:
        raise UserError(f"search.objective.direction is '{direction}'; write maximize or minimize")
    for key in ("trials", "parallel"):
        value = settings.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f"search.{key} is {value!r}; it must be a whole number >= 1")


def make_sampler(settings: dict[str, Any], number: int, grid: dict[str, list[Any]] | None = None) -> Any:
    """The sampler that asks trial ``number``: seeded with ``search.seed + number``, so a trial's draw depends on
    the study's history and that number only, never on which worker asked it or how often a worker restarted."""
    import optuna

    seed = int(settings.get("seed", 0)) + number
    name = str(settings.get("sampler"))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        # Trial n takes point n of the grid in a seeded order. Optuna's GridSampler draws among the points not yet
        # finished, so two workers asking while both run could draw the same point; fixing the point per number
        # cannot.
        import itertools
        import random

        points = list(itertools.product(*(grid or {}).values()))
        random.Random(int(settings.get("seed", 0))).shuffle(points)
        point = dict(zip(grid or {}, points[number % len(points)], strict=True))
        import warnings

        with warnings.catch_warnings():  # "experimental" since Optuna 2.4; its interface is one call
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.PartialFixedSampler(point, optuna.samplers.RandomSampler(seed=seed))
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(settings: dict[str, Any]) -> Any:
    import optuna

    pruner = dict(settings.get("pruner") or {})
    name = str(pruner.get("name"))
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=int(pruner.get("startup_trials", 2)),
                                           n_warmup_steps=int(pruner.get("warmup_steps", 0)))
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=int(pruner.get("min_resource", 1)),
                                                      reduction_factor=int(pruner.get("reduction_factor", 3)))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=int(pruner.get("min_resource", 1)),
                                              reduction_factor=int(pruner.get("reduction_factor", 3)))
    return optuna.pruners.NopPruner()


def create(sweep_dir: Path | str, settings: dict[str, Any]) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    direction = str(settings["objective"]["direction"])
    optuna.create_study(study_name=STUDY_NAME, storage=storage(sweep_dir), direction=direction)


def load(sweep_dir: Path | str, settings: dict[str, Any], sampler: Any = None, journal: Any = None) -> Any:
    """The study, with the sweep's pruner and ``sampler`` (asking needs one; reading, telling and pruning do not)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.Study(study_name=STUDY_NAME, storage=journal or storage(sweep_dir),
                        sampler=sampler or optuna.samplers.RandomSampler(), pruner=make_pruner(settings))
