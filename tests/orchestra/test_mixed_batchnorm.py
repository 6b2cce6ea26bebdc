"""MixedDtypeBatchNorm: bf16 parameters beside float32 statistics (what DeepSpeed's bf16 leaves) work on CPU and
match a float32 BatchNorm; torch's own BatchNorm2d refuses that mix on CPU, which is why the class exists."""

import pytest
import torch
from torch import nn

from orchestra.model.mixed_batchnorm import MixedDtypeBatchNorm, convert_batchnorm


def _as_deepspeed_bf16_leaves_it(norm: nn.Module) -> nn.Module:
    for parameter in norm.parameters():
        parameter.data = parameter.data.to(torch.bfloat16)
    return norm


def test_torch_batchnorm_refuses_bf16_parameters_with_float32_statistics_on_cpu():
    norm = _as_deepspeed_bf16_leaves_it(nn.BatchNorm2d(3))
    with pytest.raises(RuntimeError, match="expected scalar type"):
        norm(torch.randn(4, 3, 5, 5, dtype=torch.bfloat16))


@pytest.mark.parametrize("momentum", [0.1, None])
def test_mixed_dtypes_train_like_a_float32_batchnorm(momentum):
    torch.manual_seed(0)
    reference = nn.BatchNorm2d(3, momentum=momentum)
    with torch.no_grad():
        reference.weight.uniform_(0.5, 1.5)
        reference.bias.uniform_(-0.5, 0.5)
    mixed = convert_batchnorm(nn.Sequential(_as_deepspeed_bf16_leaves_it(nn.BatchNorm2d(3, momentum=momentum))),
                              MixedDtypeBatchNorm)[0]
    mixed.weight.data, mixed.bias.data = reference.weight.data.bfloat16(), reference.bias.data.bfloat16()
    assert isinstance(mixed, MixedDtypeBatchNorm) and mixed.running_mean.dtype == torch.float32
    for _ in range(3):
        x = torch.randn(8, 3, 5, 5) * 2 + 1
        x_bf16 = x.bfloat16().requires_grad_()
        out = mixed(x_bf16)
        assert out.dtype == torch.bfloat16
        out.float().square().sum().backward()
        expected = reference(x_bf16.detach().float())
        torch.testing.assert_close(out.float(), expected, atol=0.05, rtol=0.02)  # bf16: ~3 significant digits
    torch.testing.assert_close(mixed.running_mean, reference.running_mean, atol=0.01, rtol=0.01)
    torch.testing.assert_close(mixed.running_var, reference.running_var, atol=0.02, rtol=0.01)
    assert int(mixed.num_batches_tracked) == 3
    assert mixed.weight.grad is not None and mixed.weight.grad.dtype == torch.bfloat16  # reaches DeepSpeed's params
    mixed.eval()
    x = torch.randn(4, 3, 5, 5)
    torch.testing.assert_close(mixed(x.bfloat16()).float(), reference.eval()(x), atol=0.05, rtol=0.02)


def test_statistics_stay_untouched_when_tracking_is_switched_off_after_construction():
    """torch's rule, kept here: with track_running_stats off, training uses batch statistics and updates nothing."""
    mixed = convert_batchnorm(nn.Sequential(_as_deepspeed_bf16_leaves_it(nn.BatchNorm2d(3))), MixedDtypeBatchNorm)[0]
    mixed.track_running_stats = False
    mixed(torch.randn(4, 3, 5, 5, dtype=torch.bfloat16) + 3)
    assert torch.equal(mixed.running_mean, torch.zeros(3)) and int(mixed.num_batches_tracked) == 0
