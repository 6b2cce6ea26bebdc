"""I-JEPA's loss (Assran et al., CVPR 2023, eq. 1): the distance between predicted and target patch features,
averaged over the target patches of every block.

The paper writes the squared L2 distance; its released training script uses ``F.smooth_l1_loss`` (beta 1) instead.
Both are offered; ``l2`` (default) is the paper's equation, averaged per feature (the mean over the last dimension
too) so the scale does not grow with the encoder width, which is what the release's element-wise mean does.
"""

import torch.nn.functional as F
from torch import Tensor, nn

from method_zoo.errors import MethodError


class IJEPALoss(nn.Module):
    """``pred`` and ``target`` ``[B, M, K, D]`` -> scalar mean over images, blocks, patches and features."""

    def __init__(self, distance: str = "l2") -> None:
        super().__init__()
        if distance not in ("l2", "smooth_l1"):
            raise MethodError(f"I-JEPA loss distance must be 'l2' or 'smooth_l1' (got {distance!r})")
        self.distance = distance

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        if pred.shape != target.shape:
            raise MethodError(f"I-JEPA: predictions {tuple(pred.shape)} and targets {tuple(target.shape)} differ")
        if self.distance == "smooth_l1":
            return F.smooth_l1_loss(pred, target)
        return (pred - target).square().mean()

    def extra_repr(self) -> str:
        return f"distance={self.distance}"
