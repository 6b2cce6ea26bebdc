"""SimSiam: the loss against the paper's formula in float64 (value, gradient, stop-gradient), the forward's outputs
and heads, and 2 gloo ranks against one process."""

import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))  # the spawned ranks import the worker by plain name
import simsiam_ddp_worker as workers
from rendezvous_store import hosted_store_env

from method_zoo.forwards.simsiam import simsiam_forward
from method_zoo.losses.simsiam import SimSiamLoss
from method_zoo.parts.simsiam import simsiam_predictor, simsiam_projector

WORLD = 2


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def _reference(p_a, p_b, z_a, z_b) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The paper's L = D(p1, z2)/2 + D(p2, z1)/2 with D(p, z) = -<p/|p|, z/|z|> (batch mean), and its gradient
    with respect to p written out by hand: d cos(p, z)/dp = (z/|z| - cos * p/|p|) / |p|. z gets none."""
    n = p_a.shape[0]
    cos_ab, cos_ba = (_unit(p_a) * _unit(z_b)).sum(1), (_unit(p_b) * _unit(z_a)).sum(1)
    loss = -0.5 * (cos_ab.mean() + cos_ba.mean())
    grad_a = -0.5 / n * (_unit(z_b) - cos_ab[:, None] * _unit(p_a)) / p_a.norm(dim=1, keepdim=True)
    grad_b = -0.5 / n * (_unit(z_a) - cos_ba[:, None] * _unit(p_b)) / p_b.norm(dim=1, keepdim=True)
    return loss, grad_a, grad_b


def test_loss_value_and_gradient_match_the_paper_and_stop_the_gradient():
    g = torch.Generator().manual_seed(0)
    p_a, p_b, z_a, z_b = (torch.randn(16, 32, generator=g, dtype=torch.float64) * 3 for _ in range(4))
    want, want_a, want_b = _reference(p_a, p_b, z_a, z_b)
    inputs = [t.float().requires_grad_() for t in (p_a, p_b, z_a, z_b)]
    loss = SimSiamLoss()(*inputs)
    loss.backward()
    assert abs(loss.item() - want.item()) <= 1e-6
    torch.testing.assert_close(inputs[0].grad.double(), want_a, rtol=0, atol=1e-6)
    torch.testing.assert_close(inputs[1].grad.double(), want_b, rtol=0, atol=1e-6)
    assert inputs[2].grad is None and inputs[3].grad is None  # the stop-gradient branch takes no gradient
    assert want_a.abs().max() > 1e-3  # a gradient that is there to be matched


def test_loss_reaches_minus_one_when_predictions_point_at_their_targets():
    z = torch.randn(8, 5, dtype=torch.float64)
    perm = torch.randperm(8)
    assert SimSiamLoss()(2 * z[perm], 3 * z, z, z[perm]).item() == pytest.approx(-1.0, abs=1e-12)


def _views(n: int, dim: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(2 * n, dim, generator=g, dtype=torch.float64)
    sample_idx = torch.arange(n).repeat(2)[torch.randperm(2 * n, generator=g)]
    return {"image": image, "sample_idx": sample_idx, "label": torch.arange(2 * n)}


def test_forward_gradients_reach_the_projector_only_through_the_predictor(make_module):
    """The whole forward against the formula: grads of the backbone, projector and predictor equal those of
    L computed from explicitly split views with the projections detached as targets."""
    torch.manual_seed(0)
    parts = dict(backbone=nn.Linear(6, 5), projector=nn.Linear(5, 4), predictor=nn.Linear(4, 4))
    module = make_module(simsiam_forward, **{k: v.double() for k, v in parts.items()})
    batch = _views(6, 6, seed=1)
    out = module(batch, "train")
    assert set(out) == {"embedding", "label", "projection", "loss"}
    got = torch.autograd.grad(out["loss"], list(module.parameters()))

    order = torch.argsort(batch["sample_idx"], stable=True)  # first row of each image is view a (split_views)
    x = batch["image"][order].view(6, 2, 6)
    z = module.projector(module.backbone(x))
    p = module.predictor(z)
    want_loss, _, _ = _reference(p[:, 0], p[:, 1], z[:, 0].detach(), z[:, 1].detach())
    want = torch.autograd.grad(want_loss, list(module.parameters()))
    assert out["loss"].item() == pytest.approx(want_loss.item(), abs=1e-12)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_forward_at_val_returns_the_embedding_and_no_loss(make_module):
    module = make_module(simsiam_forward, backbone=nn.Linear(6, 5), projector=nn.Linear(5, 4),
                         predictor=nn.Linear(4, 4))
    out = module({"image": torch.randn(3, 6), "label": torch.arange(3)}, "val")
    assert set(out) == {"embedding", "label"} and out["embedding"].shape == (3, 5)


def test_heads_have_the_papers_shape():
    projector, predictor = simsiam_projector(2048), simsiam_predictor()
    linears = [m for m in projector if isinstance(m, nn.Linear)]
    norms = [m for m in projector if isinstance(m, nn.BatchNorm1d)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2048, 2048)] * 3
    assert len(norms) == 3 and isinstance(projector[-1], nn.BatchNorm1d) and not projector[-1].affine
    assert [(m.in_features, m.out_features) for m in predictor if isinstance(m, nn.Linear)] == [(2048, 512),
                                                                                                (512, 2048)]
    assert not isinstance(predictor[-1], nn.BatchNorm1d)  # no BN on the predictor's output
    assert projector(torch.randn(4, 2048)).shape == (4, 2048)


def test_ddp_on_two_ranks_matches_one_process(tmp_path):
    with hosted_store_env() as store:
        mp.spawn(workers.worker, args=(WORLD, store.port, str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    single = workers.train(rank=0, world=1)
    initial = workers.TinySimSiam().state_dict()
    moved = {name: (value - initial[name]).abs().max().item() for name, value in single.items()}
    # the run must move every part, or equality would prove nothing (a 1/world_size gradient bug halves the move)
    for part in ("backbone", "projector", "predictor"):
        assert max(v for k, v in moved.items() if k.startswith(part)) > 1e-2, (part, moved)
    for r in range(WORLD):
        for name, value in single.items():
            torch.testing.assert_close(ranks[r][name], value, rtol=0, atol=1e-10)
