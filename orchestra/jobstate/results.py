"""The results file of a job directory: the source of truth for status and reports (offline wandb has none)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, TypedDict

from orchestra.errors import UserError

EVALUATION_PROTOCOL = {
    "linear_probe": "online linear layer on the detached backbone embedding (BatchNorm without affine, own lr, "
                    "no weight decay), trained on augmented training views; top-1 on the validation split",
    "knn": "k=20, cosine similarity, votes weighted exp(sim/0.07); bank = backbone embeddings of the unaugmented "
           "training images; top-1 on the validation split",
    "reported_value": "last validation (not the best over epochs)",
}


def evaluation_protocol(train_images: int | None = None, bank_size: int | None = None,
                        val_every: int | None = 1) -> dict[str, str]:
    """The protocol a job states in results.json: which kNN bank (all training images or a fixed subset of how
    many) and how often it validated; without arguments, the general text of ``EVALUATION_PROTOCOL``."""
    protocol = dict(EVALUATION_PROTOCOL)
    if train_images is not None:
        if bank_size is None or bank_size >= train_images:
            bank = f"all {train_images} training images"
        else:
            bank = f"a fixed seeded subset of {bank_size} of the {train_images} training images, the same at every " \
                   f"validation"
        protocol["knn"] = protocol["knn"].replace("training images;", f"training images ({bank});")
    if val_every is not None and val_every > 1:
        protocol["validation"] = f"every {val_every} epochs and always at the last epoch"
    elif val_every is not None:
        protocol["validation"] = "every epoch"
    return protocol


# What a job body writes as its state. INTERRUPTED: stopped by a person (SIGINT), last.ckpt saved, resumable;
# DIVERGED: the loss became non-finite, so running it again as it is would diverge again.
STATES = ("RUNNING", "COMPLETED", "FAILED", "PREEMPTED", "INTERRUPTED", "DIVERGED", "PRUNED")


class Results(TypedDict, total=False):
    """What ``results.json`` holds. Every key only grows across attempts (history, wall time, attempts)."""

    state: str  # one of STATES: COMPLETED only after finite training and validation
    attempts: int  # starts of the job body, requeues and retries included
    method: str
    job_dir: str
    started_at: str
    finished_at: str
    error: str  # one line, for FAILED and DIVERGED
    divergence: dict[str, Any]  # DIVERGED: step, epoch, lr, what became non-finite
    evaluation: dict[str, str]  # EVALUATION_PROTOCOL
    optim: dict[str, Any]  # the learning rate actually used, after lr_scaling
    floors: dict[str, float]  # kNN top-1 of raw pixels and of the random-init backbone
    history: list[dict[str, Any]]  # one entry per validation: epoch, step, metrics
    metrics: dict[str, float]  # the last validation's (what reports show)
    wall_time_s: float
    device_hours: float
    peak_memory_mb: float
    linear_top1: float  # added by ``orchestra eval``, with its protocol under linear_eval
    linear_eval: dict[str, Any]
    costs_error: str
    pruned_at: dict[str, int]  # PRUNED: the validation {step, epoch} at which a search's pruner stopped the trial
    search: dict[str, Any]  # a search trial: {trial, worker, params, objective: {metric, value, direction}}


class UnreadableResults(UserError):
    """A results file that exists but is not a JSON object (cut off, edited, or another program's file)."""


def read_results(path: Path) -> Results:
    """The results so far, or an empty dict for a job that never started; ``UnreadableResults`` names a bad file."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    except OSError as err:  # permissions, a failing disk: the file may be fine, so it is never moved aside
        raise UserError(f"{path} could not be read ({err.strerror or err}); fix the file system, then run again"
                        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:  # read, but not JSON; not I/O
        reason = f"line {err.lineno}: {err.msg}" if isinstance(err, json.JSONDecodeError) else str(err)
        raise UnreadableResults(f"{path} is not readable as JSON ({reason}); restore the file or re-run that "
                                f"member") from None
    if not isinstance(data, dict):
        raise UnreadableResults(f"{path} holds a {type(data).__name__}, not a results object; re-run that member")
    return data


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _numbers(value: Any) -> bool:
    return isinstance(value, dict) and all(_number(v) for v in value.values())


# The type each key must have for status, report and eval to read it; keys not named here are not read by them.
_KINDS: dict[str, tuple[Any, str]] = {
    **dict.fromkeys(("job_dir", "started_at", "finished_at", "error", "costs_error"),
                    (lambda v: isinstance(v, str), "text")),
    # null from a method config without method_name (the body writes cfg.get("method_name"))
    "method": (lambda v: v is None or isinstance(v, str), "text or null"),
    "state": (lambda v: v in STATES, f"one of {', '.join(STATES)}"),
    "attempts": (_count, "a whole number >= 0"),
    **dict.fromkeys(("wall_time_s", "device_hours", "peak_memory_mb", "linear_top1"), (_number, "a number")),
    **dict.fromkeys(("metrics", "floors"), (_numbers, "an object of numbers")),
    **dict.fromkeys(("evaluation", "optim", "linear_eval"), (lambda v: isinstance(v, dict), "an object")),
}
_DIVERGENCE = {"step": (_count, "a whole number >= 0"), "epoch": (_count, "a whole number >= 0"),
               "lr": (_number, "a number"), "what": (lambda v: isinstance(v, str), "text")}
_VALIDATION = {"step": (_number, "a number"), "epoch": (_number, "a number"),
               "metrics": (_numbers, "an object of numbers")}


def _printable(data: Any) -> bool:
    """Whether every string in parsed JSON, keys included, can be printed: JSON may escape a lone surrogate
    (\\ud800) that UTF-8 cannot encode."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _wrong(data: dict[str, Any], kinds: dict[str, tuple[Any, str]], where: str = "") -> list[str]:
    return [f"'{where}{key}' is {_shown(data[key])}, not {wanted}" for key, (fits, wanted) in kinds.items()
            if key in data and not fits(data[key])]


def results_problems(data: Any) -> list[str]:
    """What in a parsed results file is not what a job body writes, one phrase each; [] for a sound file."""
    if not isinstance(data, dict):
        return [f"it holds a {type(data).__name__}, not a results object"]
    if not _printable(data):
        return ["it holds text that is not valid Unicode (an escaped lone surrogate such as \\ud800)"]
    problems = _wrong(data, _KINDS)
    history = data.get("history", [])
    if not isinstance(history, list):
        problems.append(f"'history' is {_shown(history)}, not a list")
    else:
        for n, entry in enumerate(history):
            problems += ([f"'history[{n}]' is {_shown(entry)}, not an object"] if not isinstance(entry, dict)
                         else _wrong(entry, _VALIDATION, f"history[{n}]."))
    divergence = data.get("divergence", {})
    problems += (_wrong(divergence, _DIVERGENCE, "divergence.") if isinstance(divergence, dict)
                 else [f"'divergence' is {_shown(divergence)}, not an object"])
    if data.get("state") == "COMPLETED" and not problems:  # COMPLETED is a claim of finite numbers
        problems += [f"'metrics.{k}' is {v}, but the state is COMPLETED" for k, v in (data.get("metrics") or {}).items()
                     if not math.isfinite(v)]
    return problems


def read_checked_results(path: Path) -> Results:
    """``read_results`` for readers that show results (status, report, eval): a file of the wrong shape raises
    ``UnreadableResults`` too, with one line naming every problem, so nothing downstream meets a wrong type."""
    results = read_results(path)
    problems = results_problems(results)
    if problems:
        raise UnreadableResults(f"{path} is not a results file as a job writes it ({'; '.join(problems)}); restore "
                                f"the file or re-run that member")
    return results
