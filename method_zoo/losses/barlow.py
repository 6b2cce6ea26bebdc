"""Barlow Twins redundancy-reduction loss (Zbontar et al., ICML 2021)."""

import torch
from torch import Tensor, nn

from method_zoo.distributed import all_reduce_with_grad, world_size
from method_zoo.losses.matrix import off_diagonal


class BarlowTwinsLoss(nn.Module):
    """Drive the cross-correlation of the two views' standardised projections towards the identity.

    Standardisation mirrors ``BatchNorm1d(affine=False)`` in training mode (biased variance, eps 1e-5)
    over the *global* batch, as the authors' code does with SyncBatchNorm.

    Distributed gradient: statistics and the cross-correlation are built from per-rank sums passed through
    an autograd-aware all-reduce, so every rank computes the same global loss L. The all-reduce backward
    hands each rank ``world_size * dL/d(local rows)``, and DDP's mean over ranks divides that factor back
    out -- the update equals the single-process one. (Reducing ``c`` without gradient, as is common,
    leaves each rank with only its own share and shrinks the gradient by ``1 / world_size``.)
    """

    def __init__(self, lambda_: float = 0.005, bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.lambda_ = lambda_
        self.bn_eps = bn_eps

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        """``z_a``, ``z_b``: ``[n, D]`` local projections of two views of the same images."""
        n_global = z_a.shape[0] * world_size()
        a = self._standardise(z_a, n_global)
        b = self._standardise(z_b, n_global)
        c = all_reduce_with_grad(a.T @ b) / n_global
        on_diag = (1 - torch.diagonal(c)).pow(2).sum()
        return on_diag + self.lambda_ * off_diagonal(c).pow(2).sum()

    def _standardise(self, z: Tensor, n_global: int) -> Tensor:
        mean = all_reduce_with_grad(z.sum(dim=0)) / n_global
        centred = z - mean
        var = all_reduce_with_grad(centred.pow(2).sum(dim=0)) / n_global
        return centred / torch.sqrt(var + self.bn_eps)
