"""MoCo v2 and v3: InfoNCE against the papers' formula in float64, the key queue's FIFO order, the forwards' loss
composition, the heads, the momentum schedule, a one-line refusal of a short queue, and 2 gloo ranks == 1 process."""

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))  # the spawned ranks import the worker by plain name
import moco_ddp_worker as workers
from method_zoo_ddp_worker import make_batch
from rendezvous_store import hosted_store_env

from method_zoo.errors import MethodError
from method_zoo.losses.infonce import InfoNCELoss
from method_zoo.parts.moco import (
    mocov2_projector,
    mocov3_predictor,
    mocov3_projector,
    momentum_keys,
    split_images,
)
from method_zoo.queue import FeatureQueue
from method_zoo.teacher_student import TeacherStudentWrapper

WORLD = 2


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True)


def reference_infonce(q, k, negatives, tau):
    """The paper's formula, one query at a time: -log exp(q.k+/tau) / (exp(q.k+/tau) + sum_neg exp(q.k-/tau))."""
    q, k = _unit(q), _unit(k)
    negatives = _unit(negatives) if negatives.shape[0] else negatives
    terms = []
    for i in range(q.shape[0]):
        positive = torch.exp(q[i] @ k[i] / tau)
        others = sum((torch.exp(q[i] @ n / tau) for n in negatives), torch.zeros((), dtype=q.dtype))
        terms.append(-torch.log(positive / (positive + others)))
    return torch.stack(terms).mean()


def reference_in_batch(q, k, tau):
    """MoCo v3's ctr(q, k): query i's positive is key i, every other key of the batch a negative; times 2 tau."""
    q, k = _unit(q), _unit(k)
    terms = []
    for i in range(q.shape[0]):
        denominator = sum(torch.exp(q[i] @ k[j] / tau) for j in range(k.shape[0]))
        terms.append(-torch.log(torch.exp(q[i] @ k[i] / tau) / denominator))
    return 2 * tau * torch.stack(terms).mean()


def _tensors(*shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=torch.float64, requires_grad=True) for s in shapes]


@pytest.mark.parametrize("tau", [0.2, 1.0])
def test_queue_infonce_matches_the_formula_in_value_and_gradient(tau):
    q, k, queue = _tensors((5, 4), (5, 4), (7, 4))
    got = InfoNCELoss(tau)(q, k, queue)
    (grad,) = torch.autograd.grad(got, q)
    q_ref = q.detach().clone().requires_grad_()
    want = reference_infonce(q_ref, k.detach(), queue.detach(), tau)
    want.backward()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad, q_ref.grad, rtol=0, atol=1e-6)


def test_infonce_sends_no_gradient_to_keys_or_queue():
    q, k, queue = _tensors((5, 4), (5, 4), (7, 4))
    InfoNCELoss(0.2)(q, k, queue).backward()
    assert q.grad is not None and k.grad is None and queue.grad is None
    InfoNCELoss(0.2, scale_by_temperature=True)(q, k).backward()
    assert k.grad is None


@pytest.mark.parametrize("tau", [0.2, 1.0])
def test_in_batch_infonce_scaled_matches_the_formula_in_value_and_gradient(tau):
    q, k = _tensors((6, 4), (6, 4), seed=1)
    got = InfoNCELoss(tau, scale_by_temperature=True)(q, k)
    (grad,) = torch.autograd.grad(got, q)
    q_ref = q.detach().clone().requires_grad_()
    want = reference_in_batch(q_ref, k.detach(), tau)
    want.backward()
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad, q_ref.grad, rtol=0, atol=1e-6)
    unscaled = InfoNCELoss(tau)(q, k)
    torch.testing.assert_close(unscaled * 2 * tau, got, rtol=0, atol=1e-12)


def test_an_empty_queue_leaves_only_the_positive():
    q, k = _tensors((3, 4), (3, 4))
    loss = InfoNCELoss(0.2)(q, k, torch.zeros(0, 4, dtype=torch.float64))
    assert loss.item() == 0.0


def _views(module, step):
    batch = make_batch(step, rank=0, world=1)
    x_a, x_b = split_images(batch, "test")
    return batch, x_a, x_b


def _queries(module, x_a, x_b, predictor=False):
    head = (lambda e: module.predictor(module.projector(e))) if predictor else module.projector
    return head(module.backbone(x_a)), head(module.backbone(x_b))


def test_mocov3_loss_is_the_scaled_sum_over_both_view_orders():
    module = workers.TinyMoCo("mocov3")
    batch, x_a, x_b = _views(module, 0)
    got = module(batch, "train")["loss"]
    q_a, q_b = _queries(module, x_a, x_b, predictor=True)
    k_a, k_b = momentum_keys(module, x_a), momentum_keys(module, x_b)
    want = reference_in_batch(q_a, k_b, 0.2) + reference_in_batch(q_b, k_a, 0.2)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("symmetric", [False, True])
def test_mocov2_contrasts_with_the_queue_as_it_stood_before_the_step(symmetric):
    module = workers.TinyMoCo("mocov2_symmetric" if symmetric else "mocov2")
    with torch.no_grad():
        module(make_batch(0, rank=0, world=1), "train")
    before = module.queue.contents().clone()
    batch, x_a, x_b = _views(module, 1)
    got = module(batch, "train")["loss"]
    q_a, q_b = _queries(module, x_a, x_b)
    k_a, k_b = momentum_keys(module, x_a), momentum_keys(module, x_b)
    want = reference_infonce(q_a, k_b, before, 0.2)
    if symmetric:  # solo-learn's v2+: the mean of both view orders, against the same queue
        want = (want + reference_infonce(q_b, k_a, before, 0.2)) / 2
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_the_key_queue_is_fifo_and_wraps_around():
    module = workers.TinyMoCo("mocov2")
    keys = []
    with torch.no_grad():
        for step in range(3):
            batch, _, x_b = _views(module, step)
            keys.append(F.normalize(momentum_keys(module, x_b), dim=1))
            module(batch, "train")
    n, length = workers.IMAGES_PER_STEP, workers.QUEUE_LENGTH
    # 24 keys into 12 rows: step 2's keys sit at rows 4..11, step 1's last four were overwritten at rows 0..3.
    assert int(module.queue.filled) == length and int(module.queue.pointer) == (3 * n) % length
    stream = torch.cat(keys)
    expected = torch.empty(length, stream.shape[1], dtype=stream.dtype)
    for i, row in enumerate(stream):
        expected[i % length] = row
    torch.testing.assert_close(module.queue.data, expected, rtol=0, atol=0)


def test_eval_stages_embed_with_the_query_encoder_and_leave_the_queue_alone():
    module = workers.TinyMoCo("mocov2")
    batch = {"image": torch.randn(5, 6, dtype=torch.float64), "label": torch.arange(5)}
    out = module(batch, "val")
    assert set(out) == {"embedding", "label"} and int(module.queue.filled) == 0
    torch.testing.assert_close(out["embedding"], module.backbone.student(batch["image"]))


def test_train_outputs_keep_embedding_and_label_rows_together():
    module = workers.TinyMoCo("mocov3")
    batch = make_batch(0, rank=0, world=1)
    batch["label"] = batch["sample_idx"] * 10
    out = module(batch, "train")
    x_a, x_b = split_images(batch, "test")
    order = batch["sample_idx"].argsort(stable=True)  # the shuffled rows, sorted by image
    images = batch["sample_idx"][order].reshape(-1, 2).T.flatten()
    torch.testing.assert_close(out["embedding"], module.backbone.student(torch.cat([x_a, x_b])))
    assert torch.equal(out["label"], images * 10)


def test_a_queue_shorter_than_the_global_batch_is_refused_in_one_line():
    module = workers.TinyMoCo("mocov2")
    module.queue = FeatureQueue(4, workers.PROJ_DIM).double()
    with pytest.raises(MethodError) as error:
        module(make_batch(0, rank=0, world=1), "train")
    message = str(error.value)
    assert "\n" not in message and "module.hparams.queue_size" in message and "at least 8" in message, message


def test_a_plain_network_instead_of_a_momentum_encoder_is_refused():
    module = workers.TinyMoCo("mocov3")
    module.projector = module.projector.student
    with pytest.raises(MethodError, match="'projector' to be a TeacherStudentWrapper"):
        module(make_batch(0, rank=0, world=1), "train")


def test_momentum_schedules():
    # MoCo v3: m = 1 - (1 - m0) (cos(pi k / K) + 1) / 2, from 0.99 to 1; MoCo v2: a constant 0.999.
    v3 = TeacherStudentWrapper(nn.Linear(2, 2), base_ema=0.99, final_ema=1.0)
    for step in (0, 25, 50, 100):
        want = 1 - (1 - 0.99) * (math.cos(math.pi * step / 100) + 1) / 2
        assert v3.ema_at(step, 100) == pytest.approx(want, abs=1e-12)
    assert v3.ema_at(0, 100) == pytest.approx(0.99) and v3.ema_at(100, 100) == 1.0
    v2 = TeacherStudentWrapper(nn.Linear(2, 2), base_ema=0.999, final_ema=0.999)
    assert {round(v2.ema_at(s, 100), 12) for s in range(101)} == {0.999}


def test_heads():
    v2 = mocov2_projector(8, 16, 4)
    assert [type(m) for m in v2] == [nn.Linear, nn.ReLU, nn.Linear]
    projector = mocov3_projector(8, 16, 4)
    assert [type(m) for m in projector] == [nn.Linear, nn.BatchNorm1d, nn.ReLU] * 2 + [nn.Linear, nn.BatchNorm1d]
    assert all(m.bias is None for m in projector if isinstance(m, nn.Linear))
    assert not projector[-1].affine and projector[1].affine
    predictor = mocov3_predictor(4, 16, 4)
    assert [type(m) for m in predictor] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert mocov3_projector(8, 16, 4, hidden_layers=1)(torch.randn(3, 8)).shape == (3, 4)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("moco_ddp")
    with hosted_store_env() as store:
        mp.spawn(workers.worker, args=(WORLD, store.port, str(out_dir)), nprocs=WORLD, join=True)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("method", workers.METHODS)
def test_two_ranks_match_one_process_on_the_whole_batch(ranks, method):
    single = workers.train(method, rank=0, world=1)
    initial = workers.TinyMoCo(method).state_dict()
    for name, value in single.items():
        if name.endswith("weight"):  # student and teacher both moved, so equality below proves something
            assert (value - initial[name]).abs().max() > 1e-2, name
        for r in range(WORLD):
            torch.testing.assert_close(ranks[r][method][name], value, rtol=0, atol=1e-9, msg=name)
    if method.startswith("mocov2"):  # 40 keys through 12 rows: wrapped, and identical on both ranks
        assert int(single["queue.filled"]) == workers.QUEUE_LENGTH
        assert int(single["queue.pointer"]) == (workers.STEPS * workers.IMAGES_PER_STEP) % workers.QUEUE_LENGTH
