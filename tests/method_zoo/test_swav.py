"""SwAV: Sinkhorn-Knopp and the swapped prediction against float64 formulas, the prototypes' normalisation and
freeze, the queue, bad input, and 2 gloo ranks against one process."""

import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from method_zoo.errors import MethodError
from method_zoo.forwards.swav import QUEUE_KEY
from method_zoo.losses.sinkhorn import sinkhorn_knopp
from method_zoo.losses.swav import SwAVLoss, swapped_prediction
from method_zoo.parts.swav import SwAVPrototypes

sys.path.insert(0, str(Path(__file__).parent))  # the spawned ranks import the worker by plain name
import swav_ddp_worker as swav
from rendezvous_store import hosted_store_env

WORLD = 2


def reference_codes(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """The paper's Algorithm (Appendix A.1) in float64: Q = exp(S^T / eps) normalised to total mass 1, then
    alternately rows to 1/K and columns to 1/B; returned as B * Q^T (each sample's code sums to 1)."""
    q = torch.exp(scores.double().T / epsilon)
    q = q / q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / k
        q = q / q.sum(dim=0, keepdim=True) / b
    return (q * b).T


def cosine_scores(rows: int, k: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(rows, k, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)


def test_sinkhorn_matches_the_papers_algorithm_in_float64():
    scores = cosine_scores(32, 12, seed=0)  # float32 in, as in training
    codes = sinkhorn_knopp(scores, epsilon=0.05, iterations=3)
    assert codes.dtype == torch.float32
    assert (codes.double() - reference_codes(scores, 0.05, 3)).abs().max() <= 1e-6


def test_sinkhorn_codes_lie_in_the_transportation_polytope():
    scores = cosine_scores(40, 8, seed=1, dtype=torch.float64)
    codes = sinkhorn_knopp(scores, iterations=3)
    # The last step normalises columns: every sample's code is a distribution over prototypes.
    assert torch.allclose(codes.sum(dim=1), torch.ones(40, dtype=torch.float64), atol=1e-12)
    # Equal partition holds in the limit: each prototype receives B/K samples' worth of mass.
    converged = sinkhorn_knopp(scores, iterations=500)
    assert (converged.sum(dim=0) - 40 / 8).abs().max() <= 1e-6
    # And the result is a diagonal scaling of exp(S / eps): log Q - S / eps = a_b + c_k (rank-one additive).
    m = converged.log() - scores / 0.05
    assert (m - m[:, :1] - m[:1, :] + m[0, 0]).abs().max() <= 1e-6


def test_shared_rows_join_the_transport_once_and_get_no_codes():
    scores, shared = swav.sinkhorn_scores()
    codes = sinkhorn_knopp(scores, shared=shared)
    reference = reference_codes(torch.cat([shared, scores]), 0.05, 3)[shared.shape[0]:]
    assert codes.shape == scores.shape and (codes - reference).abs().max() <= 1e-12


def test_sinkhorn_ignores_a_common_shift_that_would_overflow_exp():
    # Only differences between scores matter; unnormalised scores near 5 would overflow exp(s / 0.05) in float32.
    scores = cosine_scores(16, 6, seed=2)
    assert torch.isinf(torch.exp((scores + 5) / 0.05)).any()
    shifted = scores + 5
    codes = sinkhorn_knopp(shifted)
    assert (codes.double() - reference_codes(shifted, 0.05, 3)).abs().max() <= 1e-6  # float64 does not overflow


def reference_loss_and_grads(scores: list[torch.Tensor], codes: list[torch.Tensor], t: float):
    """Eq. 1 averaged as the paper's code does, and its gradient with the codes held fixed, in float64:
    dL/ds_v = sum over targets i != v of (softmax(s_v / t) - q_i) / (t * n * (V - 1) * G)."""
    n, g, v_count = scores[0].shape[0], len(codes), len(scores)
    probs = [torch.softmax(s / t, dim=1) for s in scores]
    loss = sum(-(q * torch.log(probs[v])).sum(dim=1).mean() for i, q in enumerate(codes)
               for v in range(v_count) if v != i) / ((v_count - 1) * g)
    grads = [sum(((probs[v] - q) for i, q in enumerate(codes) if i != v), torch.zeros_like(probs[v]))
             / (t * n * (v_count - 1) * g) for v in range(v_count)]
    return loss, grads


def test_swapped_loss_value_and_gradient_match_the_formula_and_skip_the_codes():
    views = [cosine_scores(6, 10, seed=s, dtype=torch.float64).requires_grad_() for s in range(5)]  # 2 global + 3
    loss_fn = SwAVLoss(temperature=0.1)
    loss = loss_fn(views, n_global=2)
    loss.backward()
    codes = [reference_codes(views[i].detach(), 0.05, 3) for i in range(2)]
    want, grads = reference_loss_and_grads([v.detach() for v in views], codes, 0.1)
    assert abs(loss.item() - want.item()) <= 1e-6
    for got, expected in zip(views, grads, strict=True):
        # A gradient through the codes would add d(codes)/d(scores) to the global views' rows and break this.
        assert (got.grad - expected).abs().max() <= 1e-6
    assert not loss_fn.codes(views[0]).requires_grad


def test_swapped_prediction_refuses_a_single_view():
    with pytest.raises(ValueError, match="needs >= 2 views"):
        swapped_prediction([torch.ones(2, 3)], [torch.ones(2, 3)], 0.1)


def test_prototypes_count_below_one_is_one_line():
    with pytest.raises(MethodError) as error:
        SwAVPrototypes(8, count=0)
    assert "\n" not in str(error.value) and "module.hparams.prototypes" in str(error.value)


def test_a_batch_without_local_crops_is_one_line():
    batch = swav.make_batch(0)
    del batch["local_image"], batch["local_sample_idx"]
    with pytest.raises(MethodError) as error:
        swav.SwAVModule()(batch, "train")
    assert "\n" not in str(error.value) and "data.local_views" in str(error.value)


def test_eval_stages_embed_the_images_without_crops():
    module = swav.SwAVModule().eval()
    out = module({"image": torch.randn(5, 1, 8, 8), "label": torch.arange(5)}, "val")
    assert out["embedding"].shape == (5, 16) and set(out) == {"embedding", "label"}


def step(module: torch.nn.Module, optimizer: torch.optim.Optimizer, batch_step: int) -> dict:
    out = module(swav.make_batch(batch_step), "train")
    optimizer.zero_grad()
    out["loss"].backward()
    optimizer.step()
    return out


def test_frozen_prototypes_stay_bit_identical_through_epoch_0_with_weight_decay():
    module = swav.SwAVModule(freeze_epochs=1)
    initial = module.prototypes.layer.weight.detach().clone()
    assert torch.allclose(initial.norm(dim=1), torch.ones(swav.PROTOTYPES), atol=1e-6)
    backbone_before = module.backbone[0].weight.detach().clone()
    optimizer = torch.optim.AdamW(module.parameters(), lr=0.1, weight_decay=0.5)
    for s in range(3):
        step(module, optimizer, s)
        assert module.prototypes.layer.weight.grad is None
        assert torch.equal(module.prototypes.layer.weight, initial)
    assert not torch.equal(module.backbone[0].weight, backbone_before)  # the rest did train
    module.current_epoch = 1
    step(module, optimizer, 3)
    assert module.prototypes.layer.weight.grad is not None
    assert not torch.equal(module.prototypes.layer.weight, initial)


def test_prototypes_are_unit_vectors_whenever_used():
    module = swav.SwAVModule(freeze_epochs=0)
    optimizer = torch.optim.SGD(module.parameters(), lr=1.0, weight_decay=0.5)
    seen = []
    module.prototypes.register_forward_pre_hook(lambda m, args: seen.append(m.layer.weight.norm(dim=1).clone()))
    for s in range(3):
        step(module, optimizer, s)
        # The step moved them off the sphere (so the next normalisation is doing work) ...
        assert (module.prototypes.layer.weight.norm(dim=1) - 1).abs().max() > 1e-3
    # ... and every forward used unit rows.
    for norms in seen:
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-6)


def test_queue_rows_are_the_global_projections_image_by_image():
    module = swav.SwAVModule()
    batch = swav.make_batch(0)
    out = module(batch, "train")
    z = module.projector(torch.cat([module.backbone(batch["image"]), module.backbone(batch["local_image"])]))
    n = swav.IMAGES
    assert out[QUEUE_KEY].shape == (2 * n, swav.PROJ_DIM) and not out[QUEUE_KEY].requires_grad
    assert torch.allclose(out[QUEUE_KEY][0::2], z[:n], atol=1e-6)
    assert torch.allclose(out[QUEUE_KEY][1::2], z[n:2 * n], atol=1e-6)


def test_queue_is_used_from_its_start_epoch_once_full_and_is_fifo():
    rows = 2 * swav.IMAGES
    module = swav.SwAVModule(freeze_epochs=0, queue_rows=rows + 4, queue_start_epoch=1).eval()  # eval: fixed BN
    queue = module.queues[QUEUE_KEY]
    batch = swav.make_batch(5)

    def loss() -> float:
        return module(batch, "train")["loss"].item()

    plain = loss()
    first = module(swav.make_batch(0), "train")[QUEUE_KEY]
    queue.push(first)
    module.current_epoch = 1
    assert loss() == plain  # not full yet: zero rows or a handful of samples would only skew the codes
    second = module(swav.make_batch(1), "train")[QUEUE_KEY]
    queue.push(second)
    # FIFO over 20 rows: the second push filled rows 16-19 and wrapped onto 0-11; first's rows 12-15 remain.
    assert torch.equal(queue.contents(), torch.cat([second[4:], first[12:], second[:4]]))
    module.current_epoch = 0
    assert loss() == plain  # full, but before its start epoch
    module.current_epoch = 1
    assert loss() != plain


def test_queue_and_prototypes_survive_a_checkpoint_exactly():
    module = swav.SwAVModule(freeze_epochs=0, queue_rows=2 * swav.IMAGES)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.5, momentum=0.9)
    for s in range(2):
        module.queues[QUEUE_KEY].push(step(module, optimizer, s)[QUEUE_KEY])
    restored = swav.SwAVModule(freeze_epochs=0, queue_rows=2 * swav.IMAGES, seed=1)
    restored.load_state_dict(module.state_dict())
    assert torch.equal(restored.queues[QUEUE_KEY].data, module.queues[QUEUE_KEY].data)
    assert torch.equal(restored(swav.make_batch(2), "train")["loss"], module(swav.make_batch(2), "train")["loss"])


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("swav_ddp")
    with hosted_store_env():
        mp.spawn(swav.worker, args=(WORLD, str(out_dir)), nprocs=WORLD, join=True)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD)]


def test_sinkhorn_on_two_ranks_gives_one_process_codes(ranks):
    scores, shared = swav.sinkhorn_scores()
    single = sinkhorn_knopp(scores)
    single_shared = sinkhorn_knopp(scores, shared=shared)
    for r, result in enumerate(ranks):
        mine = slice(r * swav.IMAGES // WORLD, (r + 1) * swav.IMAGES // WORLD)
        assert (result["sinkhorn"]["codes"] - single[mine]).abs().max() <= 1e-12
        assert (result["sinkhorn"]["codes_shared"] - single_shared[mine]).abs().max() <= 1e-12
    # Without the all-reduce each rank would balance only its own half: the codes would differ.
    assert (sinkhorn_knopp(scores[: swav.IMAGES // WORLD]) - single[: swav.IMAGES // WORLD]).abs().max() > 1e-3


def test_ddp_training_matches_one_process_through_the_freeze_and_the_queue(ranks):
    single = swav.train(rank=0, world=1)
    initial = swav.SwAVModule(batch_norm=False, queue_rows=2 * swav.IMAGES).double().state_dict()
    frozen = [p for p in single["prototypes"][: swav.FROZEN_STEPS]]
    assert all(torch.equal(p, initial["prototypes.layer.weight"]) for p in frozen)
    for name, value in single["state"].items():
        if name.endswith("weight"):
            assert (value - initial[name]).abs().max() > 1e-2, name  # equality below must mean something
        for result in ranks:
            torch.testing.assert_close(result["train"]["state"][name], value, rtol=0, atol=1e-9)
    # Each rank's loss is the mean over its rows; their average is the single-process loss.
    mean_loss = sum(result["train"]["losses"] for result in ranks) / WORLD
    torch.testing.assert_close(mean_loss, single["losses"], rtol=0, atol=1e-9)


def test_codes_of_half_precision_scores_are_computed_and_kept_in_float32():
    scores = cosine_scores(16, 6, seed=3)
    codes = sinkhorn_knopp(scores.bfloat16())
    assert codes.dtype == torch.float32
    assert (codes.double() - reference_codes(scores.bfloat16(), 0.05, 3)).abs().max() <= 1e-6
