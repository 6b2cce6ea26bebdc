"""NNCLR (Dwibedi et al., 2021): the positive for a view is its nearest neighbour in a support set."""

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from method_zoo.errors import MethodError
from method_zoo.forwards.common import embed, two_views
from method_zoo.requirements import require_attributes

METHOD = "nnclr_forward"
QUEUE_KEY = "nnclr_support_set"


def support_set(module: nn.Module) -> Tensor:
    """Filled rows ``[M, D]`` of the Module's support-set queue (``M`` may be 0 early in training)."""
    queues = getattr(module, "queues", None)
    if queues is None or QUEUE_KEY not in queues:
        raise MethodError(
            f"{METHOD} needs a support-set queue: add the callback OnlineQueue(key='{QUEUE_KEY}', "
            "queue_length=..., dim=<projector output dim>)"
        )
    return queues[QUEUE_KEY].contents()


@torch.no_grad()
def nearest_neighbour(z: Tensor, support: Tensor) -> Tensor:
    """For each row of ``z``, the row of ``support`` with the highest cosine similarity (no gradient)."""
    support = support.to(device=z.device, dtype=z.dtype)
    similarity = F.normalize(z, dim=1) @ F.normalize(support, dim=1).T
    return support[similarity.argmax(dim=1)]


def nnclr_forward(self: nn.Module, batch: dict[str, Any], stage: str) -> dict[str, Any]:
    """Forward for NNCLR, bound to an ``orchestra.Module``.

    Module attributes: ``backbone``, ``projector``, ``predictor``, ``nnclr_loss`` (an :class:`NTXEntLoss`),
    and at train ``queues['nnclr_support_set']`` (registered by the OnlineQueue callback). Returns
    ``embedding``, ``label`` when given, and at train ``loss`` plus ``nnclr_support_set``: the first view's
    detached projections, for the queue to store.
    """
    require_attributes(self, ("backbone", "projector", "predictor", "nnclr_loss"), METHOD)
    out = embed(self, batch, METHOD, stage)
    if stage == "train":
        support = support_set(self)
        z = self.projector(out["embedding"])
        z_a, z_b = two_views(z, batch, METHOD)
        p_a, p_b = two_views(self.predictor(z), batch, METHOD)
        # Until the queue holds anything, each view's own projections stand in (so NN(z) == z).
        support_a = support if support.shape[0] > 0 else z_a.detach()
        support_b = support if support.shape[0] > 0 else z_b.detach()
        nn_a = nearest_neighbour(z_a, support_a)
        nn_b = nearest_neighbour(z_b, support_b)
        out["loss"] = (self.nnclr_loss(nn_a, p_b) + self.nnclr_loss(nn_b, p_a)) / 2
        out[QUEUE_KEY] = z_a.detach()
    return out
