"""A first-in-first-out queue of feature rows kept in buffers, so checkpoints, device moves and DDP see it.

NNCLR's support set is one: ``nnclr_forward`` reads ``module.queues['nnclr_support_set'].contents()``, and a training
loop (orchestra's OnlineQueue callback) pushes each step's rows into it.
"""

import torch
from torch import nn

from method_zoo.distributed import gather_no_grad


class FeatureQueue(nn.Module):
    """The last ``length`` rows pushed, of width ``dim``; under torch.distributed one global queue, alike on all ranks.

    Buffers ``data`` ``[length, dim]``, ``pointer`` (the next row to write) and ``filled`` (rows written so far, at
    most ``length``) are its whole state.
    """

    def __init__(self, length: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("data", torch.zeros(length, dim))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def contents(self) -> torch.Tensor:
        """The filled rows ``[M, dim]`` (``M`` is 0 before the first push)."""
        return self.data[: int(self.filled)]

    @torch.no_grad()
    def push(self, rows: torch.Tensor) -> None:
        """Append ``rows`` ``[n, dim]``, overwriting the oldest; every rank enqueues every rank's rows."""
        rows = gather_no_grad(rows)
        length = self.data.shape[0]
        rows = rows[-length:].to(self.data.dtype)
        positions = (self.pointer + torch.arange(rows.shape[0], device=rows.device)) % length
        self.data[positions] = rows
        self.pointer.copy_((self.pointer + rows.shape[0]) % length)
        self.filled.copy_(torch.clamp(self.filled + rows.shape[0], max=length))
