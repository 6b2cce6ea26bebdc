"""Backbones: torchvision models with an optional low-resolution stem, and a small CNN for CPU runs."""

from __future__ import annotations

import torch
from torch import nn

from orchestra.errors import UserError


class SmallCNN(nn.Module):
    """Conv blocks pooled to a small grid, sized for MNIST-like inputs on two CPU cores.

    The first blocks stride by 2: at 28x28 a full-resolution conv would cost more than the rest of the network
    together. The embedding keeps a ``pool x pool`` grid instead of one global average because where a stroke sits
    is what tells a 6 from a 9 (kNN of the random-init network on the shipped digits: 0.93 with the 7x7 map,
    0.90 with a 2x2 grid, 0.79 with global pooling).
    """

    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] = (32, 64, 64), pool: int = 7,
                 strides: tuple[int, ...] | None = (2, 2, 1)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for width, stride in zip(widths, strides or [2] * len(widths), strict=True):
            layers += [nn.Conv2d(channels, width, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            channels = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(pool), nn.Flatten())
        self.embedding_dim = channels * pool * pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def from_torchvision(model_name: str, low_resolution: bool = False, in_channels: int = 3, **kwargs) -> nn.Module:
    """A torchvision classification model with its classifier replaced by identity.

    ``low_resolution`` swaps the ImageNet stem (7x7 stride-2 conv + max-pool) for a 3x3 stride-1 conv, the usual
    choice for 32x32 inputs where the ImageNet stem would throw away most of the image.
    """
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)
    if model_name not in known:
        raise UserError(f"unknown torchvision model '{model_name}'; try one of: resnet18, resnet50, vit_b_16, ...")
    model = torchvision.models.get_model(model_name, weights=None, **kwargs)
    if hasattr(model, "conv1") and (low_resolution or in_channels != 3):
        out = model.conv1.out_channels
        kernel, stride, pad = (3, 1, 1) if low_resolution else (7, 2, 3)
        model.conv1 = nn.Conv2d(in_channels, out, kernel, stride=stride, padding=pad, bias=False)
        if low_resolution:
            model.maxpool = nn.Identity()
    for head in ("fc", "classifier", "heads"):
        if hasattr(model, head):
            setattr(model, head, nn.Identity())
            break
    return model


def from_timm(model_name: str, **kwargs) -> nn.Module:
    """A timm model without its classifier (``num_classes=0``); timm is optional."""
    try:
        import timm
    except ImportError:
        raise UserError("backbone needs timm, which is not installed; run: pip install timm") from None
    return timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
