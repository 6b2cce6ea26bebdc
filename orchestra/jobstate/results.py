"""The results file of a job directory: the source of truth for status and reports (offline wandb has none)."""

from __future__ import annotations

import json
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


class Results(TypedDict, total=False):
    """What ``results.json`` holds. Every key only grows across attempts (history, wall time, attempts)."""

    state: str  # RUNNING, COMPLETED, FAILED, PREEMPTED, ...: COMPLETED only after finite training and validation
    attempts: int  # starts of the job body, requeues and retries included
    method: str
    job_dir: str
    started_at: str
    finished_at: str
    error: str  # one line, for FAILED
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
    except (UnicodeDecodeError, json.JSONDecodeError) as err:  # read, but not JSON; an I/O error is not this
        reason = f"line {err.lineno}: {err.msg}" if isinstance(err, json.JSONDecodeError) else str(err)
        raise UnreadableResults(f"{path} is not readable as JSON ({reason}); restore the file or re-run that "
                                f"member") from None
    if not isinstance(data, dict):
        raise UnreadableResults(f"{path} holds a {type(data).__name__}, not a results object; re-run that member")
    return data
