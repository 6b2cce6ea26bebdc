"""strategy=ddp through the real job body: 2 gloo ranks on halves of each global batch end with the parameters of
one process on the whole batch, for every method with a distributed loss (SimCLR, NNCLR, VICReg, Barlow Twins, BYOL).

SGD without momentum, float64. BatchNorm statistics are global (strategy.sync_batchnorm=true), otherwise each
rank would normalise its half batch with its own statistics and no equality could hold.
"""

from __future__ import annotations

import pytest
import torch
from multi_rank_jobs import initial_state, outputs, start_ranks
from orchestra_testkit import read_json, subprocess_env, tiny_overrides

from orchestra.config.compose import compose
from orchestra.jobstate.job_dir import prepare_job_dir

METHODS = ("simclr", "nnclr", "vicreg", "barlow_twins", "byol")
STEPS = 3
# float64 (trainer.precision=64-true): the two runs differ only in summation order, so any gap above rounding is a
# real difference in the mathematics. In float32 the same runs differ by up to ~4e-5 on the first conv layer
# (rounding amplified through BatchNorm backward; seen varying non-monotonically with lr), which hides nothing a
# float64 comparison would not show far more sharply. The online probe is trained too and compared like the rest;
# the kNN monitor trains nothing, but its bank is embedded half per rank and gathered, so its accuracy is compared.
SETTINGS = [f"trainer.limit_train_batches={STEPS}", "data.train_limit=192", "data.val_limit=64",
            "data.eval_batch_size=50", "optim.name=sgd", "optim.momentum=0", "optim.lr=0.01",
            "optim.warmup_epochs=0", "trainer.precision=64-true"]
DDP = ["trainer.devices=2", "strategy=ddp", "strategy.sync_batchnorm=true"]
TOLERANCE = 1e-9  # issue 5 asks for 1e-5; float64 gives ~1e-13
STATISTIC_TOLERANCE = 1e-9  # BatchNorm statistics and queued projections, relative to their size


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp-equivalence")
    dirs = {}
    for world, extra in ((1, []), (2, DDP)):
        for method in METHODS:
            dirs[method, world] = root / f"{method}-{world}"
            prepare_job_dir(dirs[method, world], compose(tiny_overrides(root, method, *SETTINGS, *extra)))
    # Both launches at once: most of each process is the torch import, which overlaps on two cores.
    single = start_ranks([dirs[m, 1] for m in METHODS], 1, subprocess_env())
    ranks = start_ranks([dirs[m, 2] for m in METHODS], 2, subprocess_env())
    logs = outputs(single) + outputs(ranks)
    for directory in dirs.values():
        assert read_json(directory / "results.json")["state"] == "COMPLETED", "\n".join(logs)[-4000:]
    assert "rank 1 of 2 (DDPStrategy)" in logs[2]
    # 192 bank images in batches of 50: the last batch of 42 splits 21/21, the others 25/25.
    assert "kNN bank: 96 of 192 images embedded on rank 1" in logs[2]
    return dirs


def _state(job_dir) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(job_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == STEPS
    return checkpoint["state_dict"]


@pytest.mark.parametrize("method", METHODS)
def test_two_ddp_ranks_end_with_the_single_process_parameters(runs, method):
    single, ddp = _state(runs[method, 1]), _state(runs[method, 2])
    initial = initial_state(runs[method, 1])
    assert set(single) == set(ddp)
    moved = max((single[k] - initial[k]).abs().max().item() for k in initial
                if k.startswith("backbone") and initial[k].is_floating_point())
    assert moved > 1e-3  # the steps moved the weights, so equality below is not equality of two untrained nets
    worst, worst_statistic = {}, {}
    for key, value in single.items():
        if not value.is_floating_point() or key.startswith("queues."):
            continue
        if key.endswith(("running_mean", "running_var")):
            worst_statistic[key] = _relative(ddp[key], value)
        else:
            worst[key] = (value - ddp[key]).abs().max().item()
    key = max(worst, key=worst.get)
    statistic = max(worst_statistic, key=worst_statistic.get)
    print(f"{method}: max |single - ddp| over parameters {worst[key]:.2e} ({key}); BatchNorm statistics relative "
          f"{worst_statistic[statistic]:.2e} ({statistic}); backbone moved {moved:.2e}")
    assert worst[key] <= TOLERANCE, (key, worst[key])
    assert worst_statistic[statistic] <= STATISTIC_TOLERANCE, (statistic, worst_statistic[statistic])


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest difference relative to the tensor's scale (activations and statistics are not O(1) numbers)."""
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


def test_nnclr_global_queue_holds_the_same_rows(runs):
    """One global queue: every rank enqueues the gathered batch. Rows may be ordered differently (views are
    grouped by dataset index within each rank's half), so they are matched as a set.
    """
    single, ddp = _state(runs["nnclr", 1]), _state(runs["nnclr", 2])
    filled = int(single["queues.nnclr_support_set.filled"])
    assert filled == int(ddp["queues.nnclr_support_set.filled"]) > 0
    a = single["queues.nnclr_support_set.data"][:filled]
    b = ddp["queues.nnclr_support_set.data"][:filled]
    match = torch.cdist(a, b).argmin(dim=1)
    assert sorted(match.tolist()) == list(range(filled))
    print(f"nnclr queue: max difference relative to the largest entry {_relative(b[match], a):.2e}")
    assert _relative(b[match], a) <= STATISTIC_TOLERANCE


@pytest.mark.parametrize("method", METHODS)
def test_knn_accuracy_from_a_gathered_bank_equals_the_single_process_one(runs, method):
    single = read_json(runs[method, 1] / "results.json")["metrics"]
    ddp = read_json(runs[method, 2] / "results.json")["metrics"]
    assert 0.2 < single["knn/top1"] == ddp["knn/top1"]  # 64 queries: one vote changed moves it by 1/64


def test_results_record_the_same_global_batch_and_lr_for_one_and_two_ranks(runs):
    single = read_json(runs["simclr", 1] / "results.json")["optim"]
    ddp = read_json(runs["simclr", 2] / "results.json")["optim"]
    assert single == ddp and single["global_batch"] == 64 and single["lr"] == pytest.approx(0.01)
