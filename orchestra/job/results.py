"""The results file of a job directory: the source of truth for status and reports (offline wandb has none)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestra.errors import UserError

EVALUATION_PROTOCOL = {
    "linear_probe": "online linear layer on the detached backbone embedding (BatchNorm without affine, own lr, "
                    "no weight decay), trained on augmented training views; top-1 on the validation split",
    "knn": "k=20, cosine similarity, votes weighted exp(sim/0.07); bank = backbone embeddings of the unaugmented "
           "training images; top-1 on the validation split",
    "reported_value": "last validation (not the best over epochs)",
}


class UnreadableResults(UserError):
    """A results file that exists but is not a JSON object (cut off, edited, or another program's file)."""


def read_results(path: Path) -> dict[str, Any]:
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
