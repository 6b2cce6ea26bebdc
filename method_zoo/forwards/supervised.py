"""Plain supervised classification, as a baseline next to the SSL methods."""

from typing import Any

import torch.nn.functional as F
from torch import nn

from method_zoo.forwards.common import embed
from method_zoo.requirements import require_attributes, require_batch_keys

METHOD = "supervised_forward"


def supervised_forward(self: nn.Module, batch: dict[str, Any], stage: str) -> dict[str, Any]:
    """Forward for supervised training, bound to an ``orchestra.Module``.

    Module attributes: ``backbone``, ``classifier``. Batch: ``image`` (any number of rows; views are not
    paired), ``label`` (required at train). Returns ``embedding``, ``logits``, ``label`` when given, and
    the cross-entropy ``loss`` when ``stage == "train"``.
    """
    require_attributes(self, ("backbone", "classifier"), METHOD)
    out = embed(self, batch, METHOD, stage)
    out["logits"] = self.classifier(out["embedding"])
    if stage == "train":
        # Without labels there is nothing to train on; fail here rather than with a missing 'loss' later.
        require_batch_keys(batch, ("label",), METHOD, stage)
        out["loss"] = F.cross_entropy(out["logits"], batch["label"])
    return out
