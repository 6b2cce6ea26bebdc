"""BYOL regression loss (Grill et al., NeurIPS 2020)."""

import torch.nn.functional as F
from torch import Tensor, nn


class BYOLLoss(nn.Module):
    """Mean over the batch of ``2 - 2 cos(p, z)``, i.e. the squared distance of the L2-normalised vectors.

    The target ``z`` is *not* detached here: the caller passes the teacher's output, which carries no
    graph, and keeping the loss a pure function lets it be reused (and gradient-checked) for both inputs.
    """

    def forward(self, p: Tensor, z: Tensor) -> Tensor:
        """``p``: online predictions ``[N, D]``; ``z``: target projections ``[N, D]``."""
        return (2 - 2 * F.cosine_similarity(p, z, dim=-1)).mean()
