"""BatchNorm whose parameters may be in a lower precision than its running statistics.

DeepSpeed (0.19 and later) under bf16 casts every parameter to bf16 but leaves buffers in float32. PyTorch's
BatchNorm refuses that mix on CPU ("expected scalar type BFloat16 but found Float") and on CUDA whenever the input
needs a gradient ("Expected running_mean to have type BFloat16 but got Float", seen on an H200), while both take a
bf16 input with float32 parameters and statistics. So the parameters are cast to the statistics' dtype for the
call; autograd carries their gradients back to the bf16 parameters DeepSpeed owns.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class MixedDtypeBatchNorm(_BatchNorm):
    """Drop-in for BatchNorm1d/2d/3d (same parameters, buffers and state-dict keys)."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"{type(self).__name__} expects at least 2-D input (got {input.dim()}-D)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        stats = self.running_mean
        if not self.affine or stats is None or self.weight.dtype == stats.dtype:
            return super().forward(input)
        self._check_input_dim(input)
        # torch's own rules: statistics are tracked in training only while track_running_stats is on, and read in
        # eval; momentum None means a cumulative average.
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        use_stats = not self.training or self.track_running_stats
        return F.batch_norm(input, stats if use_stats else None, self.running_var if use_stats else None,
                            self.weight.to(stats.dtype), self.bias.to(stats.dtype), self.training, momentum, self.eps)


def convert_batchnorm(module: nn.Module, cls: type[_BatchNorm]) -> nn.Module:
    """Replace every plain BatchNorm layer in ``module`` (in place where possible) by ``cls``."""
    if isinstance(module, _BatchNorm) and not isinstance(module, nn.SyncBatchNorm | cls):
        converted = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats,
                        device=_device_of(module))
        # The tensors themselves move over (not copies): under ZeRO 3 they are partitioned, and a copy would not fit.
        for name, value in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            setattr(converted, name, value)
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        module.add_module(name, convert_batchnorm(child, cls))
    return module


def _device_of(module: nn.Module) -> torch.device | None:
    tensor = next(iter([*module.parameters(), *module.buffers()]), None)
    return tensor.device if tensor is not None else None
