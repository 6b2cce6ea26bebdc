"""Experiment loggers from the ``logger`` config group: none, csv, or wandb (offline unless asked otherwise).

A wandb run is named after its member: group = the sweep directory's name ("train" for `orchestra train` runs),
job_type = the method, tags = the member's overrides, config = the job's resolved config with secrets redacted,
and an id derived from the job directory, so every requeue of a member resumes the same run.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from orchestra.errors import UserError

MODES = ("offline", "online", "auto")
TAG_LIMIT = 64  # wandb rejects longer tags
TRAIN_GROUP = "train"
# Overrides that say where files go, not what was trained: noise as tags.
UNTAGGED_KEYS = {"output_root", "job_dir"}
SWEEP_MANIFEST = "sweep.json"  # launch/manifest.py owns the format; the job body only reads two fields of it


def build_logger(cfg: DictConfig, job_dir: Path) -> Any:
    """The Lightning logger for a job's full config, or False for none."""
    logger_cfg = cfg.get("logger") or {}
    kind = logger_cfg.get("kind", "none")
    if kind == "csv":
        from orchestra.jobstate.results import UnreadableResults, read_results
        from orchestra.tracking.csv_logger import AppendingCSVLogger

        try:
            attempt = int(read_results(Path(job_dir) / "results.json").get("attempts", 1))
        except (UnreadableResults, TypeError, ValueError):
            attempt = 1
        return AppendingCSVLogger(Path(job_dir), attempt)
    if kind == "wandb":
        mode = resolve_mode(str(logger_cfg.get("mode", "offline")))
        try:
            from orchestra.tracking.wandb_logger import FailSafeWandbLogger

            identity = run_identity(cfg, job_dir)
            objective = ((cfg.get("search") or {}).get("objective") or {}).get("metric")
            return FailSafeWandbLogger(project=logger_cfg.get("project") or "orchestra",
                                       entity=logger_cfg.get("entity"), save_dir=str(job_dir), mode=mode,
                                       summary_metrics=summary_metrics(cfg),
                                       search_metric=str(objective) if search_trial(cfg) else None, **identity)
        except Exception as err:  # logging must never cost a run its results
            warnings.warn(f"wandb logger unavailable ({type(err).__name__}: {err}); training continues without it",
                          RuntimeWarning, stacklevel=2)
            return False
    return False


def resolve_mode(requested: str) -> str:
    """offline: always local files. online: upload when a login exists, else offline with a warning.
    auto: online exactly when a login (WANDB_API_KEY or `wandb login`) exists. A job never waits on a login prompt.
    """
    from orchestra.tracking.wandb_login import LOGIN_HINT, has_login

    if requested not in MODES:
        raise UserError(f"logger.mode '{requested}' is not one of {', '.join(MODES)}; set logger.mode=offline")
    if requested == "offline":
        return "offline"
    if has_login():
        return "online"
    if requested == "online":
        warnings.warn(f"logger.mode=online but no wandb login was found; logging offline instead ({LOGIN_HINT}, "
                      f"then upload with: orchestra sync SWEEP_DIR)", RuntimeWarning, stacklevel=2)
    return "offline"


def run_id(job_dir: Path) -> str:
    # The same on every rank and after every requeue, so a member stays one run.
    return hashlib.sha1(str(Path(job_dir).resolve()).encode()).hexdigest()[:16]


def sweep_membership(job_dir: Path) -> tuple[str, list[str]] | None:
    """(sweep name, the member's overrides) when the job directory belongs to a sweep, else None."""
    job_dir = Path(job_dir).resolve()
    try:
        members = json.loads((job_dir.parent / SWEEP_MANIFEST).read_text()).get("members", [])
    except (OSError, ValueError, AttributeError):
        return None
    overrides = next((m.get("overrides", []) for m in members
                      if Path(str(m.get("job_dir", ""))).resolve() == job_dir), [])
    return job_dir.parent.name, [str(o) for o in overrides]


def sanitize_tag(text: str) -> str:
    return re.sub(r"[^\w.=:/+-]+", "-", text)[:TAG_LIMIT]


def tags_for(method: str, seed: Any, overrides: list[str]) -> list[str]:
    """``key=value`` tags: the method and seed always, then every override (the manifest holds them redacted)."""
    from orchestra.config.compose import SECRET_KEY

    pairs: dict[str, str] = {"method": method, "seed": str(seed)}
    for text in overrides:
        key, sep, value = text.partition("=")
        key = key.lstrip("+~")
        if sep and key not in UNTAGGED_KEYS and not SECRET_KEY.search(key):
            pairs[key] = value
    return list(dict.fromkeys(sanitize_tag(f"{k}={v}") for k, v in pairs.items()))


def run_identity(cfg: DictConfig, job_dir: Path) -> dict[str, Any]:
    """The wandb.init arguments that name a member's run."""
    from orchestra.config.compose import redact

    trial = search_trial(cfg)
    if trial is not None:
        return _trial_identity(cfg, job_dir, trial)
    membership = sweep_membership(job_dir)
    group, overrides = membership if membership else (TRAIN_GROUP, [])
    method = str(cfg.get("method_name") or "unknown")
    return {
        "id": run_id(job_dir),
        "name": Path(job_dir).name,
        "group": group,
        "job_type": method,
        "tags": tags_for(method, cfg.get("seed"), overrides),
        "config": redact(OmegaConf.to_container(cfg, resolve=True)),
    }


def search_trial(cfg: DictConfig) -> dict[str, Any] | None:
    """``search.trial`` ({number, sweep_dir, worker, params}) when the job is a trial of a search sweep."""
    search = cfg.get("search")
    trial = search.get("trial") if isinstance(search, DictConfig) else None
    return OmegaConf.to_container(trial, resolve=True) if isinstance(trial, DictConfig) else None


def _trial_identity(cfg: DictConfig, job_dir: Path, trial: dict[str, Any]) -> dict[str, Any]:
    """A trial's run sits in its sweep's group (trials live one level deeper, in <sweep>/trials/NNNN), its params
    under ``search/<key>`` in the config so wandb's tables and parallel coordinates can plot them."""
    from orchestra.config.compose import SECRET_KEY, redact

    sweep_dir = Path(str(trial.get("sweep_dir") or Path(job_dir).resolve().parent.parent))
    number = int(trial.get("number", 0))
    params = {k: v for k, v in (trial.get("params") or {}).items() if not SECRET_KEY.search(str(k))}
    method = str(cfg.get("method_name") or "unknown")
    try:
        fixed = json.loads((sweep_dir / SWEEP_MANIFEST).read_text()).get("search", {}).get("fixed", [])
    except (OSError, ValueError, AttributeError):
        fixed = []
    overrides = [str(o) for o in fixed if not str(o).split("=", 1)[0].lstrip("+~").startswith("search")]
    config = redact(OmegaConf.to_container(cfg, resolve=True))
    return {
        "id": run_id(job_dir),
        "name": f"trial-{number}",
        "group": sweep_dir.name,
        "job_type": method,
        "tags": [*tags_for(method, cfg.get("seed"), overrides), "search", f"trial-{number}"],
        "config": {**config, **{f"search/{key}": value for key, value in params.items()}},
    }


def summary_metrics(cfg: DictConfig) -> tuple[str, ...]:
    """``<name>/top1`` of every evaluation callback (probe, knn, ...)."""
    callbacks = cfg.get("callbacks") or {}
    names = [str(c.get("name")) for c in callbacks.values() if isinstance(c, DictConfig) and c.get("name")]
    return tuple(f"{name}/top1" for name in names) or ("knn/top1", "probe/top1")
