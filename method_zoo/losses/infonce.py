"""InfoNCE of MoCo: a query against its key and a set of negatives (Oord et al., 2018; He et al., 2020).

``loss = -log( exp(q.k+ / tau) / sum_{k in {k+} U negatives} exp(q.k / tau) )``, averaged over the queries, with every
vector L2-normalised. Two places the negatives come from:

- a queue of past keys (MoCo v1/v2): pass ``queue``; the positive is the row's own key;
- the other keys of the global batch (MoCo v3): pass no queue; keys are gathered from every rank without gradient
  and the positive of query i is key i of the global batch.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from method_zoo.distributed import gather_no_grad, rank


class InfoNCELoss(nn.Module):
    """Mean InfoNCE of ``query`` ``[n, D]`` against ``key`` ``[n, D]`` (row i of each from the same image).

    Gradients reach the queries only: keys come from a momentum encoder and the queue holds past keys, so both are
    detached here (the papers' stop-gradient). Under DDP each rank averages over its own ``n`` queries and DDP's mean
    over ranks gives the mean over the global batch, i.e. the single-process loss.

    ``scale_by_temperature`` multiplies the loss by ``2 * temperature`` (MoCo v3's convention, which keeps the
    gradient's size roughly independent of the temperature).
    """

    def __init__(self, temperature: float = 0.2, scale_by_temperature: bool = False) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"InfoNCELoss temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.scale_by_temperature = scale_by_temperature

    def forward(self, query: Tensor, key: Tensor, queue: Tensor | None = None) -> Tensor:
        """``queue`` ``[M, D]`` of negatives (MoCo v2), or None for in-batch negatives (MoCo v3)."""
        q = F.normalize(query, dim=1)
        k = F.normalize(key.detach(), dim=1)
        if queue is None:
            keys = gather_no_grad(k)  # rank r's keys start at row r * n of the global batch
            logits = q @ keys.T
            target = torch.arange(q.shape[0], device=q.device) + rank() * q.shape[0]
        else:
            negatives = F.normalize(queue.detach().to(q.dtype), dim=1)
            # Column 0 is the positive, as in MoCo's reference code; an empty queue leaves it alone (loss 0).
            logits = torch.cat([(q * k).sum(dim=1, keepdim=True), q @ negatives.T], dim=1)
            target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        loss = F.cross_entropy(logits / self.temperature, target)
        return loss * (2 * self.temperature) if self.scale_by_temperature else loss

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, scale_by_temperature={self.scale_by_temperature}"
