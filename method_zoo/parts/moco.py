"""MoCo's heads (v2: He et al. 2020 / Chen et al. 2020; v3: Chen, Xie, He 2021) and the per-view encoding both
forwards share.

Both MoCo reference implementations run each view through an encoder on its own, so BatchNorm statistics are taken
per view (a batch never normalises a query together with its own positive); ``encode_views`` does the same.
"""

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from method_zoo.errors import MethodError
from method_zoo.forwards.common import images, two_views
from method_zoo.heads import mlp
from method_zoo.teacher_student import TeacherStudentWrapper


def mocov2_projector(in_dim: int, hidden_dim: int = 2048, out_dim: int = 128) -> nn.Sequential:
    """MoCo v2's MLP head: Linear, ReLU, Linear, no BatchNorm (Chen et al. 2020; on a ResNet-50: 2048->2048->128)."""
    return mlp(in_dim, hidden_dim, out_dim, hidden_layers=1, batch_norm=False)


def _bn_mlp(in_dim: int, hidden_dim: int, out_dim: int, hidden_layers: int, last_bn: bool) -> nn.Sequential:
    # MoCo v3 puts BN after every Linear, so the Linears carry no bias (BN's shift would cancel it).
    if hidden_layers < 0:
        raise ValueError(f"MoCo v3 heads need hidden_layers >= 0 (got {hidden_layers})")
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(hidden_layers):
        layers += [nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU()]
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim, bias=False))
    if last_bn:
        # Without affine: a learnt scale on the output would only rescale what InfoNCE normalises away.
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)


def mocov3_projector(in_dim: int, hidden_dim: int = 4096, out_dim: int = 256, hidden_layers: int = 2) -> nn.Sequential:
    """MoCo v3's projector: 3 layers with BN, 4096 hidden, 256 out, the last BN without affine (Chen, Xie, He 2021).
    ``hidden_layers=1`` gives the 2-layer variant of the released ResNet-50 configs."""
    return _bn_mlp(in_dim, hidden_dim, out_dim, hidden_layers, last_bn=True)


def mocov3_predictor(in_dim: int = 256, hidden_dim: int = 4096, out_dim: int = 256) -> nn.Sequential:
    """MoCo v3's predictor: 2 layers, 4096 hidden with BN and ReLU, 256 out with no BN (Chen, Xie, He 2021)."""
    return _bn_mlp(in_dim, hidden_dim, out_dim, hidden_layers=1, last_bn=False)


def require_momentum_encoder(module: nn.Module, names: tuple[str, ...], method: str) -> None:
    """MoCo's key encoder is the EMA teacher of these parts: each must be a TeacherStudentWrapper."""
    for name in names:
        if not isinstance(getattr(module, name, None), TeacherStudentWrapper):
            raise MethodError(f"{method} needs Module attribute '{name}' to be a TeacherStudentWrapper (the "
                              f"momentum key encoder): pass {name}=method_zoo.TeacherStudentWrapper(<network>) "
                              "to orchestra.Module")


def momentum_keys(module: nn.Module, x: Tensor) -> Tensor:
    """Keys from the momentum encoder (teacher backbone, then teacher projector), without a graph."""
    return module.projector.forward_teacher(module.backbone.forward_teacher(x))


def split_images(batch: dict[str, Any], method: str) -> tuple[Tensor, Tensor]:
    """The two views' images ``[N, C, H, W]`` each, row i of both from the same image."""
    return two_views(images(batch, method, "train"), batch, method)


def encode_views(encoder: Callable[[Tensor], Tensor], x_a: Tensor, x_b: Tensor) -> tuple[Tensor, Tensor]:
    """``encoder`` on each view separately (per-view BatchNorm statistics, as in both papers' code)."""
    return encoder(x_a), encoder(x_b)


def train_outputs(e_a: Tensor, e_b: Tensor, batch: dict[str, Any], method: str) -> dict[str, Any]:
    """``embedding`` rows ``[view a; view b]`` and ``label`` in the same order, for the probes (with the loaders'
    view-major layout this is the batch's own row order)."""
    out: dict[str, Any] = {"embedding": torch.cat([e_a, e_b])}
    if "label" in batch:
        out["label"] = torch.cat(two_views(batch["label"], batch, method))
    return out
