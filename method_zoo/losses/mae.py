"""MAE's reconstruction loss (He et al., CVPR 2022): mean squared error on the masked patches only, against targets
normalised per patch (the paper's "normalized pixels" variant, its default)."""

from torch import Tensor, nn

from method_zoo.errors import MethodError


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """``[B, C, H, W]`` -> ``[B, (H/p) * (W/p), p * p * C]``: patches in row-major grid order, each flattened as
    (row in patch, column in patch, channel)."""
    b, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise MethodError(f"MAE: images of {h}x{w} pixels do not split into {p}x{p} patches; "
                          "pick a data size that the backbone's patch_size divides")
    x = images.reshape(b, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, (h // p) * (w // p), p * p * c)


class MAELoss(nn.Module):
    """``loss(pred [B, P, p*p*C], images [B, C, H, W], mask [B, P] (1 = masked), patch_size)``.

    With ``norm_pix`` each target patch is standardised by its own pixels' mean and variance, ``(t - mean) /
    sqrt(var + eps)``; the variance is the unbiased one, as in the authors' release. The squared error is averaged
    over each patch's values, then over the masked patches of the batch: visible patches carry no loss.
    """

    def __init__(self, norm_pix: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm_pix, self.eps = norm_pix, eps

    def forward(self, pred: Tensor, images: Tensor, mask: Tensor, patch_size: int) -> Tensor:
        target = patchify(images, patch_size)
        if pred.shape != target.shape:
            raise MethodError(f"MAE decoder predicts {tuple(pred.shape)} but the patches are {tuple(target.shape)}; "
                              "the decoder's patch_size and channels must match the backbone and data")
        if self.norm_pix:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + self.eps).sqrt()
        per_patch = (pred - target).pow(2).mean(dim=-1)
        mask = mask.to(per_patch.dtype)
        return (per_patch * mask).sum() / mask.sum()

    def extra_repr(self) -> str:
        return f"norm_pix={self.norm_pix}, eps={self.eps}"
