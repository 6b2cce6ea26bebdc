"""VICReg: variance-invariance-covariance regularisation (Bardes, Ponce & LeCun, ICLR 2022)."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from method_zoo.distributed import gather_with_grad
from method_zoo.errors import MethodError
from method_zoo.losses.matrix import off_diagonal


class VICRegLoss(nn.Module):
    """Weighted sum of invariance (MSE), variance (hinge on per-dimension std) and covariance terms,
    matching the authors' released implementation.

    The variance term is the *average* of the two branches' hinge losses, and the covariance term the
    *sum* of both branches' penalties -- the asymmetry is deliberate and is what the published
    coefficients (25 / 25 / 1) were tuned with; doubling the variance term silently changes the method.

    All three terms are computed on the global batch (gathered with gradient), so every rank evaluates
    the same loss; the all-reduce in the gather's backward times DDP's gradient mean gives exactly the
    single-process gradient.
    """

    def __init__(
        self,
        sim_weight: float = 25.0,
        var_weight: float = 25.0,
        cov_weight: float = 1.0,
        epsilon: float = 1e-4,
    ) -> None:
        super().__init__()
        self.sim_weight = sim_weight
        self.var_weight = var_weight
        self.cov_weight = cov_weight
        self.epsilon = epsilon

    def terms(self, z_a: Tensor, z_b: Tensor) -> dict[str, Tensor]:
        """Unweighted ``invariance``, ``variance`` and ``covariance`` terms (useful for logging)."""
        a = gather_with_grad(z_a)
        b = gather_with_grad(z_b)
        n, dim = a.shape
        if n < 2:
            raise MethodError("VICRegLoss needs at least 2 samples in the global batch to estimate variance")
        invariance = F.mse_loss(a, b)
        a = a - a.mean(dim=0)
        b = b - b.mean(dim=0)
        variance = (self._hinge_std(a) + self._hinge_std(b)) / 2
        covariance = self._decorrelation(a, n, dim) + self._decorrelation(b, n, dim)
        return {"invariance": invariance, "variance": variance, "covariance": covariance}

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        """``z_a``, ``z_b``: ``[n, D]`` local projections of two views of the same images."""
        t = self.terms(z_a, z_b)
        return (
            self.sim_weight * t["invariance"]
            + self.var_weight * t["variance"]
            + self.cov_weight * t["covariance"]
        )

    def _hinge_std(self, centred: Tensor) -> Tensor:
        std = torch.sqrt(centred.var(dim=0) + self.epsilon)
        return F.relu(1 - std).mean()

    @staticmethod
    def _decorrelation(centred: Tensor, n: int, dim: int) -> Tensor:
        cov = centred.T @ centred / (n - 1)
        return off_diagonal(cov).pow(2).sum() / dim
