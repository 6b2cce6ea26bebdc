"""What a search sweep is before it runs, and each trial's config.

``plan`` checks everything before a directory exists: the search space (``space``), that every searched key is in
the composed config, the search settings, and that the objective metric is one the configured callbacks log. The
sweep's manifest keeps the result as its ``search`` section; workers build a trial's ``config.yaml`` from it with
``trial_config``, validated exactly as a grid member is (``MemberConfigs``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from orchestra.errors import UserError
from orchestra.search.space import SearchSpace, first_point, grid_values, override_text, parse_space
from orchestra.search.study import JOURNAL, STUDY_NAME, check_settings

TRIALS_DIR = "trials"
OVERRIDES_FILE = ".search_overrides.json"  # the fixed overrides unredacted (0600): trials need any secret in them


def trial_dir(sweep_dir: Path | str, number: int) -> Path:
    return Path(sweep_dir) / TRIALS_DIR / f"{number:04d}"


def produced_metrics(cfg: DictConfig) -> list[str]:
    """The metrics a validation record holds: each evaluator's ``<name>/top1`` and the training loss."""
    names = ["train/loss"]
    for callback in (cfg.get("callbacks") or {}).values():
        if isinstance(callback, DictConfig) and "name" in callback and \
                str(callback.get("_target_", "")).rsplit(".", 1)[-1] in ("OnlineProbe", "OnlineKNN"):
            names.append(f"{callback.name}/top1")
    return sorted(set(names))


def _check_keys(space: SearchSpace, groups: list[str]) -> None:
    from orchestra.config.compose import GROUPS, compose

    point = first_point(space)
    chosen = [override_text(k, point[k]) for k in space.distributions if k in GROUPS]
    base = compose([*groups, *chosen])
    for key in space.distributions:
        if key in GROUPS or key in space.added:
            continue
        if OmegaConf.select(base, key, default=_ABSENT, throw_on_missing=False) is _ABSENT:
            parent = key.rpartition(".")[0]
            node = OmegaConf.select(base, parent, default=None) if parent else base
            known = f"; keys under '{parent or 'the top level'}': {', '.join(sorted(map(str, node.keys())))}" \
                if isinstance(node, DictConfig) else ""
            raise UserError(f"search expression '{key}={space.text[key]}' names a key that is not in the config"
                            f"{known} (write +{key}=... to add one)")


_ABSENT = object()


@dataclass
class SearchPlan:
    space: SearchSpace
    settings: dict[str, Any]  # the composed search section (sampler, seed, trials, parallel, objective, pruner)
    grid: dict[str, list[Any]] | None

    def manifest_section(self, redacted_fixed: list[str]) -> dict[str, Any]:
        s = self.settings
        return {"space": dict(self.space.text), "distributions": self.space.to_json(),
                "added": sorted(self.space.added),
                "fixed": redacted_fixed, "sampler": s["sampler"], "seed": s["seed"], "trials": s["trials"],
                "parallel": s["parallel"], "objective": dict(s["objective"]), "pruner": dict(s["pruner"]),
                "study": STUDY_NAME, "journal": JOURNAL, "trials_dir": TRIALS_DIR,
                **({"grid": self.grid} if self.grid else {})}


def plan(overrides: list[str]) -> tuple[SearchPlan, Any]:
    """(the plan, the first point's MemberConfigs) for a ``search=optuna`` sweep; one line for any problem."""
    from orchestra.config.compose import GROUPS
    from orchestra.config.members import MemberConfigs

    space = parse_space(overrides)
    groups = [o for o in space.fixed if o.split("=", 1)[0].lstrip("+~") in GROUPS]
    _check_keys(space, groups)
    point = first_point(space)
    configs = MemberConfigs([[*space.fixed, *(override_text(k, v, k in space.added) for k, v in point.items())]])
    cfg = configs.config(0)
    settings = OmegaConf.to_container(cfg.search, resolve=True)
    check_settings(settings)
    metric = str(settings["objective"]["metric"])
    produced = produced_metrics(cfg)
    if metric not in produced:
        raise UserError(f"search.objective.metric '{metric}' is not a metric the configured callbacks log; "
                        f"metrics: {', '.join(produced)}")
    grid = None
    if settings["sampler"] == "grid":
        grid = {k: grid_values(k, d, space.text[k]) for k, d in space.distributions.items()}
        size = 1
        for values in grid.values():
            size *= len(values)
        if settings["trials"] > size:
            print(f"search.trials={settings['trials']} is more than the grid's {size} points: asking {size}")
            settings["trials"] = size
    return SearchPlan(space, settings, grid), configs


def save_overrides(sweep_dir: Path, fixed: list[str]) -> None:
    path = sweep_dir / OVERRIDES_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(fixed, handle)


def fixed_overrides(sweep_dir: Path, section: dict[str, Any]) -> list[str]:
    try:
        return list(json.loads((Path(sweep_dir) / OVERRIDES_FILE).read_text()))
    except (OSError, ValueError):  # copied without it: the manifest's (secrets redacted) still compose
        return list(section.get("fixed") or [])


def trial_config(sweep_dir: Path, section: dict[str, Any], number: int, params: dict[str, Any],
                 worker: int) -> dict:
    """The resolved config of trial ``number``: the fixed overrides plus the trial's parameters, checked as a grid
    member is, with ``search.trial`` telling the job body it is a trial (its pruning callback reads it)."""
    from orchestra.config.members import MemberConfigs

    added = set(section.get("added") or [])
    overrides = [*fixed_overrides(sweep_dir, section), *(override_text(k, v, k in added) for k, v in params.items())]
    configs = MemberConfigs([overrides])
    job_dir = trial_dir(sweep_dir, number)
    trial = {"number": number, "sweep_dir": str(sweep_dir), "worker": worker, "params": params}
    return configs.resolved(0, job_dir=str(job_dir), **{"search.trial": trial})
