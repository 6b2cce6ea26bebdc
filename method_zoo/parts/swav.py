"""SwAV's prototypes (Caron et al., 2020): K trainable unit vectors, frozen for the first epoch(s)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from method_zoo.errors import MethodError


class SwAVPrototypes(nn.Module):
    """A bias-free linear layer ``dim -> count`` whose rows (the prototypes) are kept on the unit sphere.

    Scores are cosine similarities: the projection is L2-normalised and so is every prototype. The paper normalises
    the weight in place before each training step (the gradient step moves it off the sphere); ``normalize_`` does
    that. For the first ``freeze_epochs`` epochs the prototypes take no gradient at all, so no optimizer touches them,
    weight decay included: the paper found that letting them move while the codes are still random hurts.

    Why the freeze detaches instead of zeroing gradients: a zero gradient still lets AdamW/SGD/LARS apply weight
    decay, while a parameter without gradient is skipped by every optimizer. Under DDP that parameter is unused
    during the freeze, so ``strategy.find_unused_parameters=true`` is needed there (or ``freeze_epochs=0``).
    """

    def __init__(self, dim: int, count: int = 3000, freeze_epochs: int = 1) -> None:
        super().__init__()
        if int(count) < 1:
            raise MethodError(f"SwAV needs at least one prototype (got {count}); set module.hparams.prototypes >= 1, "
                              "e.g. 3000")
        if int(freeze_epochs) < 0:
            raise MethodError(f"SwAV prototypes' freeze_epochs must be >= 0 (got {freeze_epochs}); "
                              "set module.hparams.freeze_prototypes_epochs")
        self.layer = nn.Linear(dim, int(count), bias=False)
        self.freeze_epochs = int(freeze_epochs)
        # Unit rows from the start: during the freeze they are used as they are and never renormalised, so they stay
        # bit-identical.
        self.normalize_()

    def frozen(self, epoch: int) -> bool:
        """True while ``epoch`` (0-based) is inside the freeze."""
        return epoch < self.freeze_epochs

    @torch.no_grad()
    def normalize_(self) -> None:
        """Project every prototype back onto the unit sphere, in place (call once per step, before use)."""
        self.layer.weight.copy_(F.normalize(self.layer.weight, dim=1))

    def forward(self, z: Tensor, epoch: int) -> Tensor:
        """Scores ``[n, count]``: cosine similarities of the rows of ``z`` ``[n, dim]`` to the prototypes."""
        weight = self.layer.weight.detach() if self.frozen(epoch) else self.layer.weight
        return F.linear(F.normalize(z, dim=1), weight)
