"""SimSiam's symmetric negative-cosine loss with its stop-gradient (Chen & He, CVPR 2021)."""

import torch.nn.functional as F
from torch import Tensor, nn


def negative_cosine(p: Tensor, z: Tensor) -> Tensor:
    """The paper's ``D(p, z) = -cos(p, stopgrad(z))``, averaged over the batch rows."""
    return -F.cosine_similarity(p, z.detach(), dim=-1).mean()


class SimSiamLoss(nn.Module):
    """``L = D(p_a, z_b) / 2 + D(p_b, z_a) / 2``: each view's prediction regresses the other view's projection.

    The stop-gradient lives here, not in the caller: it is what keeps SimSiam from collapsing without negatives
    or an EMA teacher (the paper's section 4.1), so a forward cannot forget it. ``z`` is the projector output
    before the predictor; the value lies in [-1, 1] and reaches -1 when every prediction points at its target.
    """

    def forward(self, p_a: Tensor, p_b: Tensor, z_a: Tensor, z_b: Tensor) -> Tensor:
        """``p_*``: predictor outputs ``[N, D]`` of views a and b; ``z_*``: their projections ``[N, D]``."""
        return 0.5 * negative_cosine(p_a, z_b) + 0.5 * negative_cosine(p_b, z_a)
