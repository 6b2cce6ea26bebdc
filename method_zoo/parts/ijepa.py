"""I-JEPA's narrow predictor (Assran et al., CVPR 2023, section 3): context tokens plus one learned mask token per
target position, a few transformer blocks, and a linear map back to the encoder's width."""

import torch
from torch import Tensor, nn

from method_zoo.errors import MethodError


def gather_rows(x: Tensor, index: Tensor) -> Tensor:
    """``x[b, index[b, j]]`` for ``x`` [B, N, D] and ``index`` [B, K] -> [B, K, D]."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class IJEPAPredictor(nn.Module):
    """Context encoding ``[B, Kc, in_dim]`` (patch tokens only) -> predictions ``[B, M, Kt, in_dim]`` per target.

    Positions are the *backbone's* positional embeddings (``positional_embedding(grid)``, passed in by the forward
    at encoder width) for the context and the target patches, mapped through the same input Linear as the tokens,
    so the predictor and the encoder agree on where each patch is. Each target block is predicted in its own
    sequence (context + that block's mask tokens), as the release does, so blocks do not see each other's queries.
    The paper's ViT-H predictor is 384-d with 12 blocks; a CPU run wants far less.
    """

    def __init__(self, in_dim: int, pred_dim: int = 384, depth: int = 6, heads: int = 12,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if pred_dim % heads:
            raise MethodError(f"I-JEPA pred_dim {pred_dim} is not divisible by pred_heads {heads}")
        self.embed = nn.Linear(in_dim, pred_dim)
        self.pos = nn.Linear(in_dim, pred_dim, bias=False)  # encoder positions into the predictor's width
        self.mask_token = nn.Parameter(torch.zeros(pred_dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(pred_dim, heads, int(pred_dim * mlp_ratio), dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(pred_dim)
        self.out = nn.Linear(pred_dim, in_dim)

    def forward(self, context: Tensor, context_idx: Tensor, target_idx: Tensor, positions: Tensor) -> Tensor:
        """``positions`` [1, P, in_dim]; ``context_idx`` [B, Kc]; ``target_idx`` [B, M, Kt]."""
        b, m, kt = target_idx.shape
        pos = self.pos(positions.expand(b, -1, -1))  # [B, P, pred_dim]
        ctx = self.embed(context) + gather_rows(pos, context_idx)
        queries = self.mask_token + gather_rows(pos, target_idx.reshape(b, m * kt)).reshape(b * m, kt, -1)
        # One sequence per (image, block): the context repeated M times, then that block's queries.
        x = torch.cat([ctx.repeat_interleave(m, dim=0), queries], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.out(self.norm(x[:, -kt:])).reshape(b, m, kt, -1)
