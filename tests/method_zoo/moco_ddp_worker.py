"""MoCo v2 and v3 inside spawned gloo ranks for test_moco.py. Batches, step count and input width are the house DDP
test's (method_zoo_ddp_worker), so every test splits the same global batches over the ranks in the same way."""


import torch
from method_zoo_ddp_worker import D_IN, IMAGES_PER_STEP, STEPS, make_batch, save_rank_results
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from method_zoo.forwards.mocov2 import mocov2_forward
from method_zoo.forwards.mocov3 import mocov3_forward
from method_zoo.losses.infonce import InfoNCELoss
from method_zoo.queue import FeatureQueue
from method_zoo.teacher_student import TeacherStudentWrapper

# 12 rows take 8 keys a step: the second push already wraps around, so the FIFO's modular write is exercised.
QUEUE_LENGTH, PROJ_DIM, LR = 12, 6, 2.0
# Momentum far below the papers' so that five steps visibly move the key encoder (equality must prove something).
EMA = {"mocov2": (0.6, 0.6), "mocov3": (0.5, 1.0)}
METHODS = ("mocov2", "mocov2_symmetric", "mocov3")


class TinyMoCo(nn.Module):
    """No BatchNorm (per-rank statistics would legitimately differ from one process's), float64 throughout."""

    def __init__(self, method: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        version = method.split("_")[0]
        base, final = EMA[version]
        backbone = nn.Sequential(nn.Linear(D_IN, 16), nn.ReLU(), nn.Linear(16, 8)).double()
        projector = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, PROJ_DIM)).double()
        self.backbone = TeacherStudentWrapper(backbone, base_ema=base, final_ema=final)
        self.projector = TeacherStudentWrapper(projector, base_ema=base, final_ema=final)
        if version == "mocov2":
            self.queue = FeatureQueue(QUEUE_LENGTH, PROJ_DIM).double()
            self.mocov2_loss = InfoNCELoss(temperature=0.2)
            self.symmetric = method.endswith("symmetric")
            self._method = mocov2_forward
        else:
            self.predictor = nn.Sequential(nn.Linear(PROJ_DIM, 12), nn.ReLU(), nn.Linear(12, PROJ_DIM)).double()
            self.mocov3_loss = InfoNCELoss(temperature=0.2, scale_by_temperature=True)
            self._method = mocov3_forward

    def forward(self, batch: dict, stage: str) -> dict:
        return self._method(self, batch, stage)


def train(method: str, rank: int, world: int) -> dict[str, torch.Tensor]:
    """STEPS optimizer steps, each followed by the EMA update orchestra.Module makes after its optimizer step."""
    module = TinyMoCo(method)
    model = DistributedDataParallel(module) if world > 1 else module
    optimizer = torch.optim.SGD([p for p in module.parameters() if p.requires_grad], lr=LR)
    teachers = [m for m in module.modules() if isinstance(m, TeacherStudentWrapper)]
    for step in range(STEPS):
        loss = model(make_batch(step, rank, world), "train")["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for teacher in teachers:
            teacher.update_teacher(step + 1, STEPS)
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def worker(rank: int, world: int, port: int, out_dir: str) -> None:
    save_rank_results(rank, world, port, out_dir, lambda: {method: train(method, rank, world) for method in METHODS})


__all__ = ["IMAGES_PER_STEP", "METHODS", "QUEUE_LENGTH", "STEPS", "TinyMoCo", "train", "worker"]
