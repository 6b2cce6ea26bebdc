"""DINO's projection head: an MLP to an L2-normalised bottleneck, then a weight-normalised layer of prototypes."""

import torch.nn.functional as F
from torch import Tensor, nn

from method_zoo.errors import MethodError


def _mlp(in_dim: int, hidden_dim: int, bottleneck_dim: int, n_layers: int, batch_norm: bool) -> nn.Sequential:
    """``n_layers`` Linear layers with GELU between them (BatchNorm too if asked), ending at the bottleneck."""
    dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [bottleneck_dim]
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(d_in, d_out))
        if i < n_layers - 1:
            layers.extend([nn.BatchNorm1d(d_out)] if batch_norm else [])
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


class DINOHead(nn.Module):
    """``n_layers`` MLP -> L2 normalise -> ``out_dim`` prototypes ``W`` whose rows are normalised to unit length.

    The last layer is weight normalisation with its gain fixed at 1 (the paper's default, which its authors found
    stabilises training): logits are cosine similarities between the bottleneck and each prototype, so the
    temperatures alone set the sharpness.

    Freezing: during the first ``freeze_last_layer_epochs`` epochs the prototypes are read through ``detach()``, so
    their gradient stays None and the optimizer skips them altogether (no AdamW weight decay, no moment update),
    which is what "frozen" must mean. Under DDP a parameter without a gradient needs
    ``find_unused_parameters=true``.
    """

    def __init__(self, in_dim: int, out_dim: int = 65536, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 n_layers: int = 3, freeze_last_layer_epochs: int = 1, batch_norm: bool = False) -> None:
        super().__init__()
        if n_layers < 1 or out_dim < 1 or freeze_last_layer_epochs < 0:
            raise MethodError(f"DINOHead needs n_layers >= 1, out_dim >= 1 and freeze_last_layer_epochs >= 0 "
                              f"(got {n_layers}, {out_dim}, {freeze_last_layer_epochs})")
        self.mlp = _mlp(in_dim, hidden_dim, bottleneck_dim, n_layers, batch_norm)
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):  # the authors' initialisation: small weights, zero bias
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        # Only the direction of each row matters (it is normalised in forward), so the default init is kept.
        self.last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)
        self.freeze_last_layer_epochs = freeze_last_layer_epochs

    def last_layer_frozen(self, epoch: int | None) -> bool:
        """True while ``epoch`` (0-based) is inside the frozen period; None (no trainer, teacher) never freezes."""
        return epoch is not None and epoch < self.freeze_last_layer_epochs

    def forward(self, x: Tensor, epoch: int | None = None) -> Tensor:
        """Prototype logits ``[N, out_dim]`` (cosine similarities in [-1, 1]) for features ``x`` ``[N, in_dim]``."""
        z = F.normalize(self.mlp(x), dim=-1)
        weight = self.last_layer.weight
        if self.last_layer_frozen(epoch):
            weight = weight.detach()
        return F.linear(z, F.normalize(weight, dim=-1))

    def extra_repr(self) -> str:
        return f"freeze_last_layer_epochs={self.freeze_last_layer_epochs}"
