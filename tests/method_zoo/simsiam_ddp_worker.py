"""SimSiam inside spawned gloo ranks for test_simsiam.py. The batches, step count and sizes are the house DDP test's
(method_zoo_ddp_worker), so both tests split the same global batches over the ranks in the same way."""


import torch
from method_zoo_ddp_worker import D_IN, STEPS, make_batch, save_rank_results
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from method_zoo.forwards.simsiam import simsiam_forward
from method_zoo.losses.simsiam import SimSiamLoss

LR, PREDICTOR_LR = 0.5, 0.2  # SimSiam's loss is in [-1, 1]: large steps so that five of them move the weights


class TinySimSiam(nn.Module):
    """No BatchNorm (per-rank statistics would legitimately differ from one process's), float64 throughout."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Linear(D_IN, 16), nn.ReLU(), nn.Linear(16, 8)).double()
        self.projector = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 6)).double()
        self.predictor = nn.Sequential(nn.Linear(6, 3), nn.ReLU(), nn.Linear(3, 6)).double()
        self.simsiam_loss = SimSiamLoss()

    def forward(self, batch: dict, stage: str) -> dict:
        return simsiam_forward(self, batch, stage)


def train(rank: int, world: int) -> dict[str, torch.Tensor]:
    module = TinySimSiam()
    model = DistributedDataParallel(module) if world > 1 else module
    predictor = list(module.predictor.parameters())
    rest = [p for p in module.parameters() if all(p is not q for q in predictor)]
    # Two groups as the method's config builds them: the predictor at its own rate.
    optimizer = torch.optim.SGD([{"params": rest}, {"params": predictor, "lr": PREDICTOR_LR}], lr=LR)
    for step in range(STEPS):
        loss = model(make_batch(step, rank, world), "train")["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def worker(rank: int, world: int, port: int, out_dir: str) -> None:
    save_rank_results(rank, world, port, out_dir, lambda: train(rank, world))
