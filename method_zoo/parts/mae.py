"""MAE's light decoder (He et al., CVPR 2022, section 3): visible tokens and mask tokens back in grid order, a few
transformer blocks, and a linear layer to each patch's pixels.

Positional embeddings are the fixed 2-D sine-cosine ones of the paper's release, computed for the grid of each
batch: no parameters and no image size to configure, so one decoder serves any input resolution.
"""

import torch
from torch import Tensor, nn

from method_zoo.errors import MethodError


def sincos_2d(dim: int, grid: tuple[int, int], device: torch.device | None = None) -> Tensor:
    """``[h * w, dim]`` row-major embeddings: half the channels encode the row, half the column, each as
    ``sin(pos * w_k), cos(pos * w_k)`` with ``w_k = 10000 ** (-k / (dim / 4))``."""
    if dim % 4:
        raise MethodError(f"MAE decoder_dim must be a multiple of 4 for 2-D sine-cosine positions (got {dim})")
    h, w = grid
    freqs = 10000.0 ** (-torch.arange(dim // 4, dtype=torch.float64, device=device) / (dim // 4))
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=device),
                                torch.arange(w, dtype=torch.float64, device=device), indexing="ij")

    def encode(pos: Tensor) -> Tensor:
        angles = pos.reshape(-1, 1) * freqs
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(rows), encode(cols)], dim=1).float()


def unshuffle(visible: Tensor, keep: Tensor, mask_token: Tensor, num_patches: int) -> Tensor:
    """``[B, P, D]`` in grid order: row ``keep[b, j]`` holds ``visible[b, j]``, every other row the mask token.

    Out of place (``scatter``, not ``scatter_``), so gradients reach both the visible tokens and the mask token.
    """
    b, _, d = visible.shape
    canvas = mask_token.to(visible.dtype).expand(b, num_patches, d)
    return canvas.scatter(1, keep.unsqueeze(-1).expand(-1, -1, d), visible)


class MAEDecoder(nn.Module):
    """Encoder tokens ``[B, 1 + K, in_dim]`` (CLS first) -> predicted pixels ``[B, P, patch_size**2 * channels]``.

    Linear ``in_dim -> decoder_dim``, mask tokens for the hidden patches, fixed 2-D sin-cos positions (the CLS
    token gets none), ``depth`` pre-norm transformer blocks, LayerNorm, Linear to the pixels. The paper's ViT-B
    decoder: 512-d, 8 blocks, 16 heads.
    """

    def __init__(self, in_dim: int, patch_size: int | None, channels: int = 3, decoder_dim: int = 512, depth: int = 8,
                 heads: int = 16, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if patch_size is None:  # the config passes backbone.patch_size, which only a ViT has
            raise MethodError("mae_forward needs a ViT backbone (backbone=vit_tiny)")
        if decoder_dim % heads:
            raise MethodError(f"MAE decoder_dim {decoder_dim} is not divisible by decoder_heads {heads}")
        self.patch_size, self.channels, self.decoder_dim = patch_size, channels, decoder_dim
        self.embed = nn.Linear(in_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(decoder_dim))
        nn.init.normal_(self.mask_token, std=0.02)  # the release's initialisation
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(decoder_dim, heads, int(decoder_dim * mlp_ratio), dropout=0.0,
                                       activation="gelu", batch_first=True, norm_first=True)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(decoder_dim)
        self.pred = nn.Linear(decoder_dim, patch_size * patch_size * channels)

    def forward(self, tokens: Tensor, keep: Tensor, grid: tuple[int, int]) -> Tensor:
        num_patches = grid[0] * grid[1]
        x = self.embed(tokens)
        patches = unshuffle(x[:, 1:], keep, self.mask_token, num_patches)
        patches = patches + sincos_2d(self.decoder_dim, grid, x.device).to(x.dtype)
        x = torch.cat([x[:, :1], patches], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.pred(self.norm(x))[:, 1:]  # the CLS row predicts nothing

    def extra_repr(self) -> str:
        return f"patch_size={self.patch_size}, channels={self.channels}, positions=fixed 2-D sin-cos"
