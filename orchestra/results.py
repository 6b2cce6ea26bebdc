"""The results file of a job directory: the source of truth for status and reports (offline wandb has none)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EVALUATION_PROTOCOL = {
    "linear_probe": "online linear layer on the detached backbone embedding (BatchNorm without affine, own lr, "
                    "no weight decay), trained on augmented training views; top-1 on the validation split",
    "knn": "k=20, cosine similarity, votes weighted exp(sim/0.07); bank = backbone embeddings of the unaugmented "
           "training images; top-1 on the validation split",
    "reported_value": "last validation (not the best over epochs)",
}


def read_results(path: Path) -> dict[str, Any]:
    """The results so far, or an empty dict for a job that never started."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
