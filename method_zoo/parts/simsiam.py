"""SimSiam's projection MLP and bottleneck prediction MLP (Chen & He, CVPR 2021, section 3 and table 1)."""

from torch import nn


def simsiam_projector(in_dim: int, hidden_dim: int = 2048, out_dim: int = 2048,
                      hidden_layers: int = 2) -> nn.Sequential:
    """``hidden_layers`` blocks of Linear, BatchNorm, ReLU, then Linear and a BatchNorm on the output.

    The paper's projector has BN on every layer, the output included; the output BN has no affine parameters, as
    in the authors' release. Linear layers followed by BN carry no bias: BN's mean subtraction removes it, and an
    unused bias would only collect weight decay.
    """
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(hidden_layers):
        layers += [nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU()]
        dim = hidden_dim
    layers += [nn.Linear(dim, out_dim, bias=False), nn.BatchNorm1d(out_dim, affine=False)]
    return nn.Sequential(*layers)


def simsiam_predictor(dim: int = 2048, hidden_dim: int = 512) -> nn.Sequential:
    """The bottleneck predictor h: Linear, BatchNorm, ReLU, then Linear back to ``dim`` with no BN on its output
    (the paper found BN there makes training unstable)."""
    return nn.Sequential(nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(),
                         nn.Linear(hidden_dim, dim))
