"""The papers' projection, prediction and classification heads, by name.

Configs name a head (``_target_: method_zoo.heads.byol_projector``) and give its widths instead of listing its
layers. Every builder creates its layers in the order the spelled-out lists did (Linear, BatchNorm1d, ReLU, ...,
Linear), so the same seed gives the same parameters. Defaults are the paper's widths and depth; ``hidden_layers``
counts the Linear(+BatchNorm)+ReLU blocks before the last Linear.
"""

from torch import nn


def mlp(in_dim: int, hidden_dim: int, out_dim: int, hidden_layers: int = 1, batch_norm: bool = True) -> nn.Sequential:
    """``hidden_layers`` blocks of Linear (+ BatchNorm1d) + ReLU, then a Linear to ``out_dim``."""
    if hidden_layers < 0:
        raise ValueError(f"mlp needs hidden_layers >= 0 (got {hidden_layers})")
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(hidden_layers):
        layers.append(nn.Linear(dim, hidden_dim))
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.ReLU())
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*layers)


def simclr_projector(in_dim: int, hidden_dim: int = 2048, out_dim: int = 128) -> nn.Sequential:
    """SimCLR's g(.): Linear, ReLU, Linear, no BatchNorm (Chen et al. 2020; on a ResNet-50: 2048->2048->128)."""
    return mlp(in_dim, hidden_dim, out_dim, hidden_layers=1, batch_norm=False)


def byol_projector(in_dim: int, hidden_dim: int = 4096, out_dim: int = 256) -> nn.Sequential:
    """BYOL's projector: Linear, BatchNorm, ReLU, Linear (Grill et al. 2020: 4096 hidden, 256 out)."""
    return mlp(in_dim, hidden_dim, out_dim, hidden_layers=1)


def byol_predictor(in_dim: int = 256, hidden_dim: int = 4096, out_dim: int = 256) -> nn.Sequential:
    """BYOL's predictor q: the projector's architecture on the projection (Grill et al. 2020)."""
    return mlp(in_dim, hidden_dim, out_dim, hidden_layers=1)


def nnclr_projector(in_dim: int, hidden_dim: int = 2048, out_dim: int = 256, hidden_layers: int = 2) -> nn.Sequential:
    """NNCLR's projector: three layers with BatchNorm, 2048 hidden, 256 out (Dwibedi et al. 2021)."""
    return mlp(in_dim, hidden_dim, out_dim, hidden_layers=hidden_layers)


def nnclr_predictor(in_dim: int = 256, hidden_dim: int = 4096, out_dim: int = 256) -> nn.Sequential:
    """NNCLR's predictor: two layers, 4096 hidden, 256 out (Dwibedi et al. 2021)."""
    return mlp(in_dim, hidden_dim, out_dim, hidden_layers=1)


def vicreg_expander(in_dim: int, hidden_dim: int = 8192, out_dim: int = 8192, hidden_layers: int = 2) -> nn.Sequential:
    """VICReg's expander: three layers of 8192, the first two with BatchNorm and ReLU (Bardes et al. 2022)."""
    return mlp(in_dim, hidden_dim, out_dim, hidden_layers=hidden_layers)


def barlow_twins_projector(in_dim: int, hidden_dim: int = 8192, out_dim: int = 8192,
                           hidden_layers: int = 2) -> nn.Sequential:
    """Barlow Twins' projector: three layers of 8192, the first two with BatchNorm and ReLU (Zbontar et al.
    2021). The paper's linear layers have no bias; these keep it, as the configs always have."""
    return mlp(in_dim, hidden_dim, out_dim, hidden_layers=hidden_layers)


def linear_classifier(in_dim: int, num_classes: int = 1000) -> nn.Linear:
    """The supervised baseline's head: one Linear from the embedding to the classes (ImageNet's 1000 by default)."""
    return nn.Linear(in_dim, num_classes)


__all__ = [
    "barlow_twins_projector",
    "byol_predictor",
    "byol_projector",
    "linear_classifier",
    "mlp",
    "nnclr_predictor",
    "nnclr_projector",
    "simclr_projector",
    "vicreg_expander",
]
