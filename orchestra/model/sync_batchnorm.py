"""BatchNorm over the global batch on any device: what ``torch.nn.SyncBatchNorm`` does, but also on CPU (gloo).

torch's SyncBatchNorm refuses CPU tensors, and without synchronised statistics a 2-rank run normalises each half
batch by its own mean and variance, so it cannot equal one process on the whole batch. Here the statistics are two
autograd-aware all-reduces (sum, then sum of squared deviations), so gradients flow to every rank's rows exactly as
in one process; running statistics are updated from the global values, identical on every rank.
"""

from __future__ import annotations

import torch
from torch import nn

from method_zoo.distributed import all_reduce_with_grad, world_size
from orchestra.model.mixed_batchnorm import MixedDtypeBatchNorm, convert_batchnorm


class GlobalBatchNorm(MixedDtypeBatchNorm):
    """Drop-in for BatchNorm1d/2d/3d (same parameters, buffers and state-dict keys)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(input)
        self._check_input_dim(input)
        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        # Sums and counts in at least float32: a bf16 input (DeepSpeed's) would round a count like 19600 to 19584.
        dtype = torch.promote_types(input.dtype, torch.float32)
        local_count = torch.tensor([input.numel() / input.shape[1]], dtype=dtype, device=input.device)
        totals = all_reduce_with_grad(torch.cat([input.sum(dims, dtype=dtype), local_count]))
        count = totals[-1].detach()
        mean = totals[:-1] / count
        centred = input.to(dtype) - mean.reshape(shape)
        var = all_reduce_with_grad((centred * centred).sum(dims)) / count
        output = centred * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            output = output * self.weight.to(dtype).reshape(shape) + self.bias.to(dtype).reshape(shape)
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), count)
        return output.to(input.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * count / (count - 1).clamp(min=1)
        self.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)


def convert_to_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every plain BatchNorm layer in ``module`` (in place where possible) by a GlobalBatchNorm."""
    return convert_batchnorm(module, GlobalBatchNorm)
