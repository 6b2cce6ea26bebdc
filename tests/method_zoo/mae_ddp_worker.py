"""MAE inside spawned gloo ranks for test_mae.py, with a plain-torch stand-in for orchestra's ViT (same duck-typed
interface: ``patch_size``, ``embed_dim``, ``grid``, ``patch_embed_tokens``, ``tokens``, CLS from ``forward``).
The step count and images per step are the house DDP test's (method_zoo_ddp_worker)."""


import torch
from method_zoo_ddp_worker import IMAGES_PER_STEP, STEPS, save_rank_results
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from method_zoo.forwards.mae import mae_forward
from method_zoo.losses.mae import MAELoss
from method_zoo.parts.mae import MAEDecoder

SIZE, PATCH, CHANNELS, DIM = 16, 4, 2, 16  # a 4x4 grid: 16 patches, 4 visible at ratio 0.75
LR = 0.5


class StandInViT(nn.Module):
    """One pre-norm block over [CLS] + patch tokens; no dropout, so DDP and one process compute the same."""

    def __init__(self, image_size: int = SIZE, patch_size: int = PATCH, in_chans: int = CHANNELS,
                 embed_dim: int = DIM, heads: int = 2) -> None:
        super().__init__()
        self.patch_size, self.embed_dim = patch_size, embed_dim
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.cls = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, (image_size // patch_size) ** 2, embed_dim) * 0.02)
        self.block = nn.TransformerEncoderLayer(embed_dim, heads, 2 * embed_dim, dropout=0.0, batch_first=True,
                                                norm_first=True)
        self.norm = nn.LayerNorm(embed_dim)

    def grid(self, x: Tensor) -> tuple[int, int]:
        return x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size

    def patch_embed_tokens(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2) + self.pos

    def tokens(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        t = self.patch_embed_tokens(x)
        if keep is not None:
            t = t.gather(1, keep.unsqueeze(-1).expand(-1, -1, t.shape[-1]))
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1)
        return self.norm(self.block(t))

    def forward(self, x: Tensor) -> Tensor:
        return self.tokens(x)[:, 0]


class TinyMAE(nn.Module):
    """float64 throughout; hparams as orchestra.Module holds them."""

    def __init__(self, norm_pix: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = StandInViT().double()
        self.decoder = MAEDecoder(DIM, PATCH, CHANNELS, decoder_dim=8, depth=1, heads=2).double()
        self.mae_loss = MAELoss(norm_pix=norm_pix)
        self.hparams = {"mask_ratio": 0.75, "mask_seed": 7}

    def forward(self, batch: dict, stage: str) -> dict:
        return mae_forward(self, batch, stage)


def make_batch(step: int, rank: int, world: int) -> dict:
    """Rank ``rank``'s contiguous share of the step's global batch (one view per image)."""
    g = torch.Generator().manual_seed(2000 + step)
    image = torch.randn(IMAGES_PER_STEP, CHANNELS, SIZE, SIZE, generator=g, dtype=torch.float64)
    sample_idx = torch.arange(IMAGES_PER_STEP) + step * IMAGES_PER_STEP  # new images, so new masks, every step
    rows = slice(rank * IMAGES_PER_STEP // world, (rank + 1) * IMAGES_PER_STEP // world)
    return {"image": image[rows], "sample_idx": sample_idx[rows]}


def train(rank: int, world: int) -> dict[str, Tensor]:
    module = TinyMAE()
    model = DistributedDataParallel(module) if world > 1 else module
    optimizer = torch.optim.SGD(module.parameters(), lr=LR)
    for step in range(STEPS):
        loss = model(make_batch(step, rank, world), "train")["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def worker(rank: int, world: int, port: int, out_dir: str) -> None:
    save_rank_results(rank, world, port, out_dir, lambda: train(rank, world))
