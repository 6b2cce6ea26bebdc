"""What needs no training: kNN top-1 of raw pixels and of the randomly initialised backbone, on the same split.

A method's accuracy means little without these floors beside it (on MNIST a random CNN already gets ~0.94).
"""

from __future__ import annotations

import torch

from orchestra.callbacks.knn import knn_predict
from orchestra.evaluation.floors_cache import floors_key, read_cached, write_cached


@torch.no_grad()
def _features(module, loader, key: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    features, labels = [], []
    for batch in loader:
        x = batch["image"].flatten(1) if key is None else module(batch, stage="val")[key]
        features.append(torch.nn.functional.normalize(x.float(), dim=1))
        labels.append(batch["label"])
    return torch.cat(features), torch.cat(labels)


MAX_BANK = 60_000  # beyond MNIST/CIFAR sizes the floors cost as much as an epoch; skip them there


def knn_floors(module, datamodule, k: int = 20, temperature: float = 0.07,
               bank_size: int | None = None) -> dict[str, float]:
    """The floors against the same bank the online kNN uses (``bank_size``: its fixed subset; None: all rows)."""
    if len(datamodule.train) > MAX_BANK or getattr(datamodule, "is_folder", False):
        return {}
    settings = {"k": k, "temperature": temperature, "size": datamodule.size, "bank_size": bank_size,
                "forward": getattr(getattr(module, "forward_fn", None), "__qualname__", type(module).__qualname__)}
    key = floors_key(_inputs(module, datamodule), settings)
    cached = read_cached(key)
    if cached is not None:
        return cached
    floors = _compute(module, datamodule, k, temperature, bank_size)
    write_cached(key, floors)
    return floors


def _inputs(module, datamodule):
    """Everything the floors depend on: the images and labels of both splits and the initial weights."""
    for split, arrays in (("train", datamodule.train), ("val", datamodule.test)):
        yield f"{split}/images", arrays.images
        yield f"{split}/labels", arrays.labels
    yield from module.state_dict().items()


def _compute(module, datamodule, k: int, temperature: float, bank_size: int | None) -> dict[str, float]:
    was_training = module.training
    module.eval()
    floors = {}
    try:
        for name, key in (("raw_pixels", None), ("random_init", "embedding")):
            bank, bank_labels = _features(module, datamodule.bank_dataloader(size=bank_size), key)
            queries, labels = _features(module, datamodule.val_dataloader(), key)
            predictions = knn_predict(queries, bank, bank_labels, datamodule.num_classes, k, temperature)
            floors[f"{name}/knn_top1"] = round(float((predictions == labels).float().mean()), 6)
    finally:
        module.train(was_training)
    return floors
