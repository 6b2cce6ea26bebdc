"""Online linear probe: a linear classifier trained on detached features beside the SSL objective."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from orchestra.callbacks.accuracy import Top1Counter
from orchestra.callbacks.keys import read_output
from orchestra.callbacks.shapes import infer_output_dim


class LinearProbeHead(nn.Module):
    """Lives in ``Module.evaluators`` so checkpoints, devices and DDP treat it like any other submodule.

    Its loss is added to the training loss but its input is detached, so no gradient reaches the backbone; its
    parameters sit in their own optimizer group (own learning rate, no weight decay, no schedule), which makes the
    shared optimizer step equivalent to a separate probe optimizer.
    """

    def __init__(self, name: str, input: str, target: str, input_dim: int, num_classes: int, lr: float) -> None:
        super().__init__()
        self.name, self.input, self.target, self.lr = name, input, target, lr
        self.norm = nn.BatchNorm1d(input_dim, affine=False)  # feature scales differ wildly between methods
        self.linear = nn.Linear(input_dim, num_classes)
        self.top1 = Top1Counter()

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        # Each layer in its own dtype: float32 normally (autocast handles bf16-mixed), float64 under 64-true. DeepSpeed
        # casts parameters to bf16 but leaves buffers (the norm's running statistics) in float32, and BatchNorm's
        # backward refuses an input whose dtype differs from its running statistics (seen on a GPU smoke run).
        normalized = self.norm(features.detach().to(self.norm.running_mean.dtype))
        return self.linear(normalized.to(self.linear.weight.dtype))

    def training_loss(self, outputs: dict) -> torch.Tensor:
        features = read_output(outputs, self.input, f"OnlineProbe '{self.name}'")
        targets = read_output(outputs, self.target, f"OnlineProbe '{self.name}'")
        return F.cross_entropy(self.logits(features), targets)

    def validation_update(self, outputs: dict) -> None:
        features = read_output(outputs, self.input, f"OnlineProbe '{self.name}'")
        targets = read_output(outputs, self.target, f"OnlineProbe '{self.name}'")
        self.top1.update(self.logits(features).argmax(dim=1), targets)

    def validation_compute(self) -> dict[str, float]:
        value = self.top1.compute()
        self.top1.reset()
        return {f"{self.name}/top1": value}


class OnlineProbe(pl.Callback):
    """Attaches a :class:`LinearProbeHead` to the Module; reads ``outputs[input]`` and ``outputs[target]``."""

    def __init__(self, name: str = "probe", input: str = "embedding", target: str = "label",
                 num_classes: int = 10, input_dim: int | None = None, lr: float = 1e-3) -> None:
        self.name, self.input, self.target = name, input, target
        self.num_classes, self.input_dim, self.lr = num_classes, input_dim, lr

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.name in pl_module.evaluators:
            return
        dim = self.input_dim or infer_output_dim(trainer, pl_module, self.input, f"OnlineProbe '{self.name}'")
        pl_module.evaluators[self.name] = LinearProbeHead(self.name, self.input, self.target, dim,
                                                          self.num_classes, self.lr)
