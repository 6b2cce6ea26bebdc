"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR (Chen et al., 2020)."""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from method_zoo.distributed import gather_with_grad, rank


class NTXEntLoss(nn.Module):
    """Contrastive loss over ``2N`` embeddings: each row's positive is the other view of its image and its
    negatives are the remaining ``2N - 2`` rows of the *global* batch (all ranks, gathered with gradient).

    Under DDP each rank averages over its own ``2n`` anchors; DDP's mean over ranks then yields the
    gradient of the mean over all ``2N`` anchors, i.e. the single-process loss on the full batch.
    """

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"NTXEntLoss temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        """``z_a``, ``z_b``: ``[n, D]`` local embeddings of two views, row i of each from the same image."""
        n = z_a.shape[0]
        local = F.normalize(torch.cat([z_a, z_b], dim=0), dim=1)
        # Gathering the [a; b] block per rank means rank r's rows start at r * 2n in the global matrix.
        candidates = gather_with_grad(local)
        logits = local @ candidates.T / self.temperature

        offset = rank() * 2 * n
        rows = torch.arange(2 * n, device=local.device)
        self_cols = offset + rows
        positive_cols = offset + (rows + n) % (2 * n)
        # A row is never its own negative; the most negative finite value keeps softmax free of NaNs.
        # torch.full, not torch.tensor: a host-to-device copy of a Python scalar would wait for the GPU each step.
        exclude = torch.full((), torch.finfo(logits.dtype).min, dtype=logits.dtype, device=logits.device)
        logits = logits.index_put((rows, self_cols), exclude)
        return F.cross_entropy(logits, positive_cols)
