"""I-JEPA inside spawned gloo ranks for test_ijepa.py. The ViT is test_mae's stand-in (imported, not copied) plus
the ``positional_embedding`` the I-JEPA predictor reads; the step count and images per step are the house DDP
test's (method_zoo_ddp_worker)."""


import torch
from mae_ddp_worker import CHANNELS, DIM, LR, SIZE, StandInViT
from method_zoo_ddp_worker import IMAGES_PER_STEP, STEPS, save_rank_results
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from method_zoo.forwards.ijepa import ijepa_forward
from method_zoo.losses.ijepa import IJEPALoss
from method_zoo.parts.ijepa import IJEPAPredictor
from method_zoo.teacher_student import TeacherStudentWrapper


class PositionedViT(StandInViT):
    """The stand-in with its (single-grid) learned positions exposed as orchestra's ViT exposes them."""

    def positional_embedding(self, grid: tuple[int, int]) -> Tensor:
        return self.pos


class TinyIJEPA(nn.Module):
    """float64 throughout; hparams as orchestra.Module holds them. A 4x4 grid, like vit_tiny on 28-px digits."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = TeacherStudentWrapper(PositionedViT().double(), base_ema=0.9, final_ema=1.0)
        self.predictor = IJEPAPredictor(DIM, pred_dim=8, depth=1, heads=2).double()
        self.ijepa_loss = IJEPALoss()
        self.hparams = {"mask_seed": 7, "num_targets": 4}

    def forward(self, batch: dict, stage: str) -> dict:
        return ijepa_forward(self, batch, stage)


def make_batch(step: int, rank: int, world: int) -> dict:
    """Rank ``rank``'s contiguous share of the step's global batch (one view per image)."""
    g = torch.Generator().manual_seed(3000 + step)
    image = torch.randn(IMAGES_PER_STEP, CHANNELS, SIZE, SIZE, generator=g, dtype=torch.float64)
    sample_idx = torch.arange(IMAGES_PER_STEP) + step * IMAGES_PER_STEP
    rows = slice(rank * IMAGES_PER_STEP // world, (rank + 1) * IMAGES_PER_STEP // world)
    return {"image": image[rows], "sample_idx": sample_idx[rows]}


def train(rank: int, world: int) -> dict[str, Tensor]:
    module = TinyIJEPA()
    model = DistributedDataParallel(module) if world > 1 else module
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=LR)
    for step in range(STEPS):
        loss = model(make_batch(step, rank, world), "train")["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        module.backbone.update_teacher(step + 1, STEPS)  # what orchestra.Module does after each optimizer step
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def worker(rank: int, world: int, port: int, out_dir: str) -> None:
    save_rank_results(rank, world, port, out_dir, lambda: train(rank, world))
