"""Small matrix helpers shared by the redundancy-reduction losses."""

import torch
from torch import Tensor


def off_diagonal(m: Tensor) -> Tensor:
    """All off-diagonal entries of a square matrix, flattened."""
    n = m.shape[0]
    mask = ~torch.eye(n, dtype=torch.bool, device=m.device)
    return m[mask]
