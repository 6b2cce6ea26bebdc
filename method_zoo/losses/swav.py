"""SwAV's swapped prediction (Caron et al., 2020, Eq. 1-2): predict one view's code from another view."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from method_zoo.losses.sinkhorn import sinkhorn_knopp


def swapped_prediction(codes: list[Tensor], scores: list[Tensor], temperature: float) -> Tensor:
    """``codes[i]`` ``[n, K]`` (targets, from global view i) against the softmax of every other view's ``scores``.

    ``scores`` lists every view ``[n, K]``, the ``len(codes)`` global views first (their order matching ``codes``),
    then the local crops. Each target view's cross-entropy is averaged over the other views and the targets are
    averaged, as in the paper's code, so the loss scale does not grow with the number of crops. Per sample it is a
    mean over this rank's rows: DDP's average over ranks makes it the mean over the global batch.
    """
    if len(scores) < 2 or not 1 <= len(codes) <= len(scores):
        raise ValueError(f"swapped_prediction needs >= 2 views and 1..{len(scores)} targets (got {len(codes)})")
    log_probs = [F.log_softmax(s / temperature, dim=1) for s in scores]
    loss = scores[0].new_zeros(())
    for i, q in enumerate(codes):
        others = [lp for v, lp in enumerate(log_probs) if v != i]
        loss = loss + sum(-(q.detach() * lp).sum(dim=1).mean() for lp in others) / len(others)
    return loss / len(codes)


class SwAVLoss(nn.Module):
    """Codes by Sinkhorn-Knopp over the global batch, then the swapped prediction.

    ``temperature`` (0.1) sharpens the predicted distribution; ``epsilon`` (0.05) and ``iterations`` (3) are the
    Sinkhorn-Knopp settings of the paper.
    """

    def __init__(self, temperature: float = 0.1, epsilon: float = 0.05, iterations: int = 3) -> None:
        super().__init__()
        if temperature <= 0 or epsilon <= 0 or iterations < 1:
            raise ValueError(f"SwAVLoss needs temperature > 0, epsilon > 0 and iterations >= 1 "
                             f"(got {temperature}, {epsilon}, {iterations})")
        self.temperature, self.epsilon, self.iterations = temperature, epsilon, iterations

    def codes(self, scores: Tensor, shared: Tensor | None = None) -> Tensor:
        """One view's codes ``[n, K]`` (no gradient); ``shared``: queued scores that join the transport."""
        return sinkhorn_knopp(scores, self.epsilon, self.iterations, shared)

    def forward(self, scores: list[Tensor], n_global: int, queued: list[Tensor | None] | None = None) -> Tensor:
        """``scores``: every view's prototype scores ``[n, K]``, the ``n_global`` global views first; ``queued``:
        per global view, the queue's scores (or None)."""
        queued = queued or [None] * n_global
        codes = [self.codes(scores[i], queued[i]) for i in range(n_global)]
        return swapped_prediction(codes, scores, self.temperature)
