"""Vision Transformer backbone with a token interface for masked methods (MAE-style patch subsets).

Written in plain torch instead of wrapping timm or torchvision: neither of their ViTs can encode an arbitrary
subset of patches (they always run every patch of the image), which is what masked image modelling needs, and
plain torch keeps the backbone available wherever orchestra runs (timm is optional).

The interface, duck-typed by method_zoo forwards (which cannot import orchestra):

- ``vit(x) -> [B, D]``: the [CLS] embedding after the final norm, for any input whose sides are multiples of the
  patch size (positional embeddings are bicubic-interpolated from the base grid, so 14-px local crops of 28-px
  digits work);
- ``vit.patch_size``, ``vit.embed_dim``, ``vit.grid(x) -> (rows, cols)``;
- ``vit.patch_embed_tokens(x) -> [B, P, D]``: patch embeddings plus their positional embeddings, row-major, no CLS;
- ``vit.tokens(x, keep=None) -> [B, 1 + K, D]``: final-norm tokens, CLS first, of the kept patches only
  (``keep``: LongTensor [B, K] of row-major patch indices; None keeps all P);
- ``vit.cls_token`` ([1, 1, D]; it carries no positional embedding: it is learned and has no position),
  ``vit.blocks`` (an ``nn.ModuleList``, so FSDP2 can shard block by block) and ``vit.norm``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention`` (fused kernels where the device has them)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        # [B, N, 3D] -> three [B, heads, N, head_dim]
        q, k, v = self.qkv(x).reshape(batch, length, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT with a [CLS] token, learned positional embeddings for the ``image_size`` patch grid, and a final norm.

    See the module docstring for the interface. ``image_size`` only fixes the base grid of the positional
    embeddings; other input sizes (multiples of ``patch_size``) interpolate them.
    """

    def __init__(self, image_size: int = 224, patch_size: int = 16, in_chans: int = 3, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.patch_size = patch_size
        self.embed_dim = embed_dim
        self.base_grid = (image_size // patch_size, image_size // patch_size)
        # A stride-p conv with a p x p kernel is exactly a linear map of each flattened patch.
        self.patch_embed = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.base_grid[0] * self.base_grid[1], embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        # The usual ViT init, truncated normal with std 0.02; the patch projection is a linear map, so it gets the same.
        # trunc_normal_'s bounds are absolute (default +-2, i.e. 100 std here: no truncation at all), so pass 2 std.
        def trunc_normal(tensor: torch.Tensor) -> None:
            nn.init.trunc_normal_(tensor, std=0.02, a=-0.04, b=0.04)

        trunc_normal(self.cls_token)
        trunc_normal(self.pos_embed)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                trunc_normal(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def grid(self, x: torch.Tensor) -> tuple[int, int]:
        """Patches per side (rows, cols) for the images ``x`` [B, C, H, W]."""
        height, width = x.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"input {height}x{width} is not a multiple of the patch size {self.patch_size}")
        return height // self.patch_size, width // self.patch_size

    def positional_embedding(self, grid: tuple[int, int]) -> torch.Tensor:
        """[1, rows * cols, D]: the learned embeddings at the base grid, bicubic-resized for any other grid."""
        if grid == self.base_grid:
            return self.pos_embed
        rows, cols = self.base_grid
        as_image = self.pos_embed.reshape(1, rows, cols, self.embed_dim).permute(0, 3, 1, 2)
        # Bicubic in float32: bf16 weights (trainer.precision=bf16-true) would round the interpolation weights.
        resized = F.interpolate(as_image.float(), size=grid, mode="bicubic", align_corners=False)
        return resized.to(self.pos_embed.dtype).permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], self.embed_dim)

    def patch_embed_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[B, P, D]: each patch's embedding plus its positional embedding, row-major over the grid, no CLS."""
        grid = self.grid(x)
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, D, rows, cols] -> [B, P, D], row-major
        return tokens + self.positional_embedding(grid)

    def tokens(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """[B, 1 + K, D]: the final-norm tokens, CLS first, of the patches in ``keep`` ([B, K] indices; None: all).

        Dropped patches are removed before attention, so they cost nothing and influence nothing (MAE's encoder).
        Goes through ``__call__``: FSDP2 gathers a sharded module's own parameters (patch projection, positional
        embeddings, final norm) in its forward hooks, which a plain method call would skip.
        """
        return self(x, keep=keep, all_tokens=True)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None, all_tokens: bool = False) -> torch.Tensor:
        """[B, D]: the [CLS] embedding after the final norm (what probes and kNN read); ``all_tokens``: every token,
        as ``tokens`` gives them."""
        patches = self.patch_embed_tokens(x)
        if keep is not None:
            patches = torch.gather(patches, 1, keep.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        sequence = torch.cat([self.cls_token.expand(patches.shape[0], -1, -1), patches], dim=1)
        for block in self.blocks:
            sequence = block(sequence)
        sequence = self.norm(sequence)
        return sequence if all_tokens else sequence[:, 0]
