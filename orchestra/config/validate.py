"""The one validation step ``orchestra train`` and ``orchestra sweep`` run on every member's config before any job
directory or job exists: every problem at once, one line each, naming the key and a fix.

Without it a bad value surfaced as a traceback after the job directory was written, or worse, trained nothing and
ended COMPLETED with nan metrics (max_epochs=0, a batch larger than the training set under drop_last). The checks
read a plain, resolved config (``validation_view`` gives the sections they read) and never import torch, so a
100-member ``sweep --dry-run`` stays fast. The ``data`` section's own checks live with the data code
(``orchestra.data.checks``); this module adds what crosses sections: batches against images and ranks, the
accelerator against this machine.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable
from typing import Any

from orchestra.config.optim_checks import optim_problems
from orchestra.config.values import MISSING, is_int
from orchestra.errors import UserError

# The top-level keys the checks read; resolving only these keeps a sweep's validation cheap.
SECTIONS = ("seed", "optim", "trainer", "data", "launcher", "strategy", "callbacks", "module")
MAX_LINES = 30  # a sweep where every member is wrong in its own way still fits on a screen


def _missing(node: Any, prefix: str = "") -> Iterable[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _missing(value, f"{prefix}{key}.")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _missing(value, f"{prefix}{index}.")
    elif node == MISSING:
        yield prefix[:-1]


def _required(key: str) -> str:
    # the same words as compose.resolved_container, which used to report the first one only
    return f"config value '{key}' is required; set it on the command line: {key}=..."


def _seed_problems(cfg: dict) -> list[str]:
    seed = cfg.get("seed")
    if seed == MISSING or "seed" not in cfg:
        return []
    if not is_int(seed) or not 0 <= seed < 2**32:
        return [f"seed must be a whole number from 0 to 2**32-1, got {seed!r}; set e.g. seed=0"]
    return []


def _count_problem(key: str, value: Any, allowed: str, example: str, extra: tuple = ()) -> str | None:
    """A whole-number setting that must be at least 1 (``extra``: other values Lightning also accepts)."""
    if value == MISSING or value in extra and not isinstance(value, bool) or is_int(value) and value >= 1:
        return None
    return f"{key} must be {allowed}, got {value!r}; set e.g. {key}={example}"


def _bank_problems(cfg: dict) -> list[str]:
    """``callbacks.<knn>.bank_size``: how many training images the kNN bank holds (null: all of them)."""
    callbacks = cfg.get("callbacks") if isinstance(cfg.get("callbacks"), dict) else {}
    return [f"callbacks.{name}.bank_size must be a whole number of training images, 1 or more, or null (all of "
            f"them), got {cb['bank_size']!r}; set e.g. callbacks.{name}.bank_size=50000"
            for name, cb in callbacks.items() if isinstance(cb, dict) and "bank_size" in cb
            and _count_problem("", cb["bank_size"], "", "", (None,))]


def _trainer_problems(trainer: dict) -> list[str]:
    steps = trainer.get("max_steps")
    unlimited_epochs = (-1,) if is_int(steps) and steps >= 1 else ()  # Lightning: -1 means max_steps decides
    epochs = trainer.get("max_epochs")
    problems = [
        "trainer.max_epochs=0 trains nothing (the run would end with nan metrics); set trainer.max_epochs=1 or more"
        if epochs == 0 and is_int(epochs) else
        _count_problem("trainer.max_epochs", epochs, "a whole number of epochs, 1 or more", "5",
                       (None, *unlimited_epochs)),  # None: Lightning's own default
        _count_problem("trainer.num_nodes", trainer.get("num_nodes", 1), "a whole number, 1 or more", "1"),
        _count_problem("trainer.accumulate_grad_batches", trainer.get("accumulate_grad_batches", 1),
                       "a whole number, 1 or more", "1"),
        _count_problem("trainer.check_val_every_n_epoch", trainer.get("check_val_every_n_epoch", 1),
                       "a whole number, 1 or more, or null", "1", (None,)),
    ]
    if steps is not None:
        problems.append(_count_problem("trainer.max_steps", steps, "-1 (no limit) or a whole number, 1 or more",
                                       "1000", (-1,)))
    devices = trainer.get("devices", "auto")
    if isinstance(devices, bool) or is_int(devices) and devices < 1 and devices != -1:
        problems.append(f"trainer.devices must be a whole number, 1 or more (-1 or auto: all of them), got "
                        f"{devices!r}; set e.g. trainer.devices=1")
    limit = trainer.get("limit_train_batches")
    if limit is not None and limit != MISSING and (isinstance(limit, bool) or not (
            is_int(limit) and limit >= 1 or isinstance(limit, float) and 0 < limit <= 1)):
        problems.append(f"trainer.limit_train_batches must be null, a whole number of batches (1 or more) or a "
                        f"fraction in (0, 1], got {limit!r}; set e.g. trainer.limit_train_batches=null")
    return [p for p in problems if p]


def _ranks(trainer: dict) -> int | None:
    devices, nodes = trainer.get("devices"), trainer.get("num_nodes", 1)
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    if is_int(devices) and devices >= 1 and is_int(nodes) and nodes >= 1:
        return devices * nodes
    return None  # auto, -1 or a list: Lightning decides, so the split cannot be checked here


def _batch_problems(cfg: dict, sizes: tuple[int, int] | None) -> list[str]:
    """At least one training batch per rank per epoch: the loader drops the last partial batch and splits each
    global batch evenly over the ranks (data.datamodule); anything less trains nothing and reports nan."""
    data, trainer = cfg.get("data"), cfg.get("trainer")
    if not isinstance(data, dict) or not isinstance(trainer, dict):
        return []
    batch = data.get("batch_size")
    if not is_int(batch) or batch < 1:
        return []  # the data checks name it
    problems = []
    ranks = _ranks(trainer)
    if ranks is not None and batch % ranks:
        fits = max(1, batch // ranks) * ranks
        problems.append(f"data.batch_size={batch} does not split evenly over {ranks} ranks (trainer.devices x "
                        f"trainer.num_nodes); use a multiple of {ranks}, e.g. data.batch_size={fits}")
    if sizes is None:
        return problems
    images = sizes[0]
    limited = " (data.train_limit)" if is_int(data.get("train_limit")) else ""
    if batch > images:
        problems.append(f"data.batch_size={batch} is more than the {images} training images{limited}: the last "
                        f"partial batch is dropped, so no epoch would train; set data.batch_size={images} or less"
                        + (" or raise data.train_limit" if limited else ""))
        return problems
    fraction = trainer.get("limit_train_batches")
    if isinstance(fraction, float) and 0 < fraction <= 1 and int(images // batch * fraction) < 1:
        problems.append(f"trainer.limit_train_batches={fraction} of {images // batch} training batches is none; "
                        f"raise it to at least {1 / (images // batch):.2g} or set it to null")
    return problems


def _visible_gpus() -> int | None:
    """CUDA devices this process would see, without importing torch (cheap commands stay light)."""
    if "torch" in sys.modules:
        cuda = sys.modules["torch"].cuda
        return cuda.device_count() if cuda.is_available() else 0
    try:
        present = sum(1 for name in os.listdir("/dev") if re.fullmatch(r"nvidia\d+", name))
    except OSError:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        present = min(present, len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"]))
    return present


def _hardware_problems(cfg: dict) -> list[str]:
    trainer, launcher = cfg.get("trainer"), cfg.get("launcher")
    if not isinstance(trainer, dict):
        return []
    if isinstance(launcher, dict) and launcher.get("name") == "slurm":
        return []  # the allocation brings the GPUs; this machine (a login node) need not have any
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator not in ("gpu", "cuda"):
        return []
    gpus = _visible_gpus()
    if gpus == 0:
        return [f"trainer.accelerator={accelerator} but this machine has no CUDA GPU; use trainer.accelerator=cpu "
                f"here, or launcher=slurm to run on the cluster's GPUs"]
    devices = trainer.get("devices")
    if gpus is not None and is_int(devices) and devices > gpus:
        return [f"trainer.devices={devices} but this machine has {gpus} CUDA GPU(s); set trainer.devices={gpus} "
                f"or fewer, or use launcher=slurm"]
    return []


def _pipeline_problems(cfg: dict) -> list[str]:
    """``data.pipeline``: cpu, gpu or auto. gpu builds the training views on the training device after the batch is
    moved there, so it is refused, not quietly moved to the CPU, where no CUDA device will train."""
    data, trainer, launcher = cfg.get("data"), cfg.get("trainer"), cfg.get("launcher")
    pipeline = data.get("pipeline", "auto") if isinstance(data, dict) else "auto"
    if pipeline == MISSING or pipeline == "auto" or pipeline == "cpu":
        return []
    if pipeline != "gpu":
        return [f"data.pipeline={pipeline!r} is not a pipeline; use one of: cpu, gpu, auto"]
    accelerator = str(trainer.get("accelerator", "auto")) if isinstance(trainer, dict) else "auto"
    if accelerator not in ("gpu", "cuda", "auto"):
        return [f"data.pipeline=gpu builds the views on a CUDA device but trainer.accelerator={accelerator}; use "
                f"data.pipeline=auto (or cpu), or trainer.accelerator=gpu"]
    if accelerator == "auto" and not (isinstance(launcher, dict) and launcher.get("name") == "slurm") \
            and _visible_gpus() == 0:  # accelerator=gpu on such a machine is already refused in its own line
        return ["data.pipeline=gpu but this machine has no CUDA GPU; use data.pipeline=auto (views built in the "
                "loader here), or launcher=slurm to run on the cluster's GPUs"]
    return []


def _strategy_problems(cfg: dict) -> list[str]:
    if not isinstance(cfg.get("trainer"), dict):
        return []
    from orchestra.distributed.strategies import check_strategy  # torch-free; raises its one line

    try:
        check_strategy(cfg.get("strategy"), cfg["trainer"])
    except UserError as err:
        return [str(err)]
    return []


class ConfigChecks:
    """The checks, with the data checks' answers kept per distinct ``data`` section: a sweep's members mostly share
    one, and an image folder is scanned once rather than once per member."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[list[str], tuple[int, int] | None]] = {}

    def _data_answers(self, data: dict) -> tuple[list[str], tuple[int, int] | None]:
        from orchestra.data.checks import data_problems, dataset_sizes  # torch-free

        key = json.dumps(data, sort_keys=True, default=str)
        if key not in self._data:
            problems = data_problems(data)
            self._data[key] = (problems, dataset_sizes(data) if not problems else None)
        return self._data[key]

    def problems(self, cfg: dict) -> list[str]:
        """Every problem of one resolved config (a plain dict; sections other than ``SECTIONS`` are not read)."""
        data = cfg.get("data")
        answers = self._data_answers(data) if isinstance(data, dict) else None
        # a missing data value is the data checks' to name, with a fix that knows the dataset
        missing = [k for k in _missing(cfg) if answers is None or not k.startswith("data.")]
        problems = [_required(k) for k in missing]
        problems += _seed_problems(cfg) + optim_problems(cfg) + _bank_problems(cfg)
        trainer = cfg.get("trainer")
        if isinstance(trainer, dict):
            problems += _trainer_problems(trainer)
        data_lines, sizes = answers if answers is not None else ([], None)
        problems += data_lines + _batch_problems(cfg, sizes) + _hardware_problems(cfg) + _pipeline_problems(cfg)
        problems += _strategy_problems(cfg)
        return list(dict.fromkeys(problems))


def config_problems(cfg: dict) -> list[str]:
    """Every problem of one resolved plain config, one complete line each; empty when it can run."""
    return ConfigChecks().problems(cfg)


def problems_message(problems: list[str], where: str = "the config") -> str:
    """One line for one problem; a count and one indented line each for more (the CLI prefixes ``error: ``)."""
    if len(problems) == 1:
        return problems[0]
    shown = problems[:MAX_LINES]
    more = [f"  ... and {len(problems) - len(shown)} more"] if len(problems) > len(shown) else []
    return "\n".join([f"{len(problems)} problems in {where}; nothing was created:", *(f"  {p}" for p in shown), *more])


def check_config(cfg: dict, member: str | None = None) -> None:
    """Raises one UserError holding every problem of ``cfg``; ``member`` names it in a sweep."""
    problems = config_problems(cfg)
    if problems:
        raise UserError(problems_message([f"member {member}: {p}" if member else p for p in problems]))


def sweep_message(found: list[tuple[str, list[str]]], total: int) -> str:
    """The problems of a sweep's members (``found``: label and problems of each member that has any). A problem
    every member shares is said once ("all N members"), the rest per member."""
    shared = set(found[0][1]).intersection(*(set(p) for _, p in found[1:])) if len(found) == total else set()
    lines = [p if total == 1 else f"all {total} members: {p}" for p in found[0][1] if p in shared]
    lines += [f"member {label}: {p}" for label, problems in found for p in problems if p not in shared]
    return problems_message(lines, f"{len(found)} of {total} sweep members")


def validation_view(cfg: Any) -> dict:
    """The sections the checks read, resolved, from a composed DictConfig; a mandatory value left unset stays
    ``???`` so that every one of them is reported, not the first."""
    from omegaconf import DictConfig, ListConfig, OmegaConf
    from omegaconf.errors import InterpolationToMissingValueError, OmegaConfBaseException

    view: dict = {}
    for key in SECTIONS:
        if key not in cfg:
            continue
        try:
            if OmegaConf.is_missing(cfg, key):
                view[key] = MISSING
                continue
            node = cfg[key]
            if key == "callbacks" and isinstance(node, DictConfig):
                # only their lr and bank_size are checked; resolving a whole callback (num_classes: ${...}) costs
                # 10x more
                view[key] = {name: {k: sub[k] for k in ("lr", "bank_size") if k in sub}
                             for name, sub in node.items_ex(resolve=False) if isinstance(sub, DictConfig)}
                continue
            if key == "module" and isinstance(node, DictConfig):
                # only its part names are checked (against optim.param_groups); its values are never resolved
                view[key] = {name: None for name in node.keys()}
                continue
            view[key] = OmegaConf.to_container(node, resolve=True, throw_on_missing=False) \
                if isinstance(node, DictConfig | ListConfig) else node
        except InterpolationToMissingValueError:
            continue  # points at a value left unset, which is reported where it is
        except OmegaConfBaseException as err:
            raise UserError(f"config value '{key}' cannot be resolved: {str(err).splitlines()[0]}") from None
    return view
