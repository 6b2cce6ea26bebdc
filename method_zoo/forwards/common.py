"""Pieces every forward shares: the embedding/label outputs and the two-view split at train time."""

from typing import Any

from torch import Tensor, nn

from method_zoo.requirements import require_batch_keys
from method_zoo.views import split_views


def base_outputs(embedding: Tensor, batch: dict[str, Any]) -> dict[str, Any]:
    """The keys callbacks rely on at every stage: ``embedding`` and, when the data has one, ``label``."""
    out: dict[str, Any] = {"embedding": embedding}
    if "label" in batch:
        out["label"] = batch["label"]
    return out


def images(batch: dict[str, Any], method: str, stage: str) -> Tensor:
    """``batch['image']`` with a MethodError instead of a KeyError when it is missing."""
    require_batch_keys(batch, ("image",), method, stage)
    return batch["image"]


def two_views(x: Tensor, batch: dict[str, Any], method: str) -> tuple[Tensor, Tensor]:
    """Split per-row outputs ``x`` into the two views of each image (train batches only)."""
    require_batch_keys(batch, ("sample_idx",), method, "train")
    view_a, view_b = split_views(x, batch["sample_idx"], n_views=2, method=method)
    return view_a, view_b


def embed(module: nn.Module, batch: dict[str, Any], method: str, stage: str) -> dict[str, Any]:
    """Run ``module.backbone`` on the images and start the output dict."""
    return base_outputs(module.backbone(images(batch, method, stage)), batch)
