"""Each loss against a float64 reference written from the paper's formula with explicit loops."""

import math

import pytest
import torch

from method_zoo import BarlowTwinsLoss, BYOLLoss, NTXEntLoss, VICRegLoss

RTOL, ATOL = 1e-7, 1e-9


def _cos(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u * v).sum() / torch.sqrt((u * u).sum() * (v * v).sum())


def ntxent_reference(z_a: torch.Tensor, z_b: torch.Tensor, t: float) -> torch.Tensor:
    # SimCLR eq. 1: rows 2k and 2k+1 are the two views of image k; average l(i, j) over all 2N anchors.
    n = z_a.shape[0]
    rows = [z_a[k // 2] if k % 2 == 0 else z_b[k // 2] for k in range(2 * n)]
    total = z_a.new_zeros(())
    for i in range(2 * n):
        j = i + 1 if i % 2 == 0 else i - 1
        denom = sum(torch.exp(_cos(rows[i], rows[k]) / t) for k in range(2 * n) if k != i)
        total = total - torch.log(torch.exp(_cos(rows[i], rows[j]) / t) / denom)
    return total / (2 * n)


def _column(z: torch.Tensor, j: int) -> list[torch.Tensor]:
    return [z[i, j] for i in range(z.shape[0])]


def _vicreg_branch(z: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Variance hinge v(Z) and covariance penalty c(Z) of the VICReg paper, eqs. 1-4."""
    n, d = z.shape
    means = [sum(_column(z, j)) / n for j in range(d)]
    var = [sum((x - means[j]) ** 2 for x in _column(z, j)) / (n - 1) for j in range(d)]
    v = sum(torch.clamp(1 - torch.sqrt(var[j] + eps), min=0) for j in range(d)) / d
    c = z.new_zeros(())
    for j in range(d):
        for k in range(d):
            if j != k:
                cov = sum((z[i, j] - means[j]) * (z[i, k] - means[k]) for i in range(n)) / (n - 1)
                c = c + cov**2
    return v, c / d


def vicreg_reference(z_a, z_b, lam, mu, nu, eps):
    n, d = z_a.shape
    s = sum((z_a[i, j] - z_b[i, j]) ** 2 for i in range(n) for j in range(d)) / (n * d)
    v_a, c_a = _vicreg_branch(z_a, eps)
    v_b, c_b = _vicreg_branch(z_b, eps)
    return lam * s + mu * (v_a + v_b) / 2 + nu * (c_a + c_b)


def _standardise(z: torch.Tensor, eps: float) -> list[list[torch.Tensor]]:
    n, d = z.shape
    out = [[None] * d for _ in range(n)]
    for j in range(d):
        mean = sum(_column(z, j)) / n
        var = sum((x - mean) ** 2 for x in _column(z, j)) / n
        for i in range(n):
            out[i][j] = (z[i, j] - mean) / torch.sqrt(var + eps)
    return out


def barlow_reference(z_a, z_b, lambda_):
    # Barlow Twins eq. 1-2 with batch-normalised embeddings (biased variance, BatchNorm's eps).
    n, d = z_a.shape
    a, b = _standardise(z_a, 1e-5), _standardise(z_b, 1e-5)
    loss = z_a.new_zeros(())
    for j in range(d):
        for k in range(d):
            c = sum(a[i][j] * b[i][k] for i in range(n)) / n
            loss = loss + ((1 - c) ** 2 if j == k else lambda_ * c**2)
    return loss


def byol_reference(p, z):
    n = p.shape[0]
    return sum(2 - 2 * _cos(p[i], z[i]) for i in range(n)) / n


def _inputs(seed: int, n: int = 6, d: int = 5, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    z_a = (scale * torch.randn(n, d, generator=g, dtype=torch.float64)).requires_grad_()
    z_b = (scale * torch.randn(n, d, generator=g, dtype=torch.float64)).requires_grad_()
    return z_a, z_b


def _assert_value_and_grads(loss_fn, reference_fn, z_a, z_b):
    got = loss_fn(z_a, z_b)
    want = reference_fn(z_a, z_b)
    torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL)
    got_grads = torch.autograd.grad(got, (z_a, z_b))
    want_grads = torch.autograd.grad(want, (z_a, z_b))
    for g, w in zip(got_grads, want_grads, strict=True):
        assert w.abs().max() > 1e-4  # the reference actually depends on the input
        torch.testing.assert_close(g, w, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_ntxent_matches_simclr_formula(temperature):
    z_a, z_b = _inputs(0)
    _assert_value_and_grads(
        NTXEntLoss(temperature), lambda a, b: ntxent_reference(a, b, temperature), z_a, z_b
    )


@pytest.mark.parametrize("scale", [0.3, 2.0])  # 0.3 keeps the variance hinge active, 2.0 switches it off
def test_vicreg_matches_paper_formula(scale):
    z_a, z_b = _inputs(1, n=7, d=4, scale=scale)
    _assert_value_and_grads(
        VICRegLoss(), lambda a, b: vicreg_reference(a, b, 25.0, 25.0, 1.0, 1e-4), z_a, z_b
    )


def test_vicreg_custom_weights():
    z_a, z_b = _inputs(2, scale=0.5)
    loss = VICRegLoss(sim_weight=3.0, var_weight=7.0, cov_weight=0.5, epsilon=1e-3)
    _assert_value_and_grads(loss, lambda a, b: vicreg_reference(a, b, 3.0, 7.0, 0.5, 1e-3), z_a, z_b)


def test_vicreg_variance_term_is_the_average_of_both_branches():
    z_a, z_b = _inputs(3, n=8, d=6, scale=0.2)
    v_a, _ = _vicreg_branch(z_a.detach(), 1e-4)
    v_b, _ = _vicreg_branch(z_b.detach(), 1e-4)
    got = VICRegLoss(sim_weight=0.0, var_weight=1.0, cov_weight=0.0)(z_a, z_b).detach()
    torch.testing.assert_close(got, (v_a + v_b) / 2, rtol=RTOL, atol=ATOL)
    assert not math.isclose(got.item(), (v_a + v_b).item(), rel_tol=1e-3)  # the doubled-term bug


@pytest.mark.parametrize("lambda_", [0.005, 0.3])
def test_barlow_matches_paper_formula(lambda_):
    z_a, z_b = _inputs(4, n=6, d=4)
    _assert_value_and_grads(BarlowTwinsLoss(lambda_), lambda a, b: barlow_reference(a, b, lambda_), z_a, z_b)


def test_barlow_standardisation_equals_batchnorm_without_affine():
    z_a, z_b = _inputs(5, n=10, d=3)
    bn = torch.nn.BatchNorm1d(3, affine=False, dtype=torch.float64).train()
    c = bn(z_a).T @ bn(z_b) / 10
    want = (1 - c.diagonal()).pow(2).sum() + 0.005 * (c.pow(2).sum() - c.diagonal().pow(2).sum())
    torch.testing.assert_close(BarlowTwinsLoss()(z_a, z_b), want, rtol=RTOL, atol=ATOL)


def test_byol_matches_normalised_mse():
    p, z = _inputs(6)
    _assert_value_and_grads(BYOLLoss(), byol_reference, p, z)
