"""Real 2-rank gloo runs: DDP on half batches must match one process on the whole batch, step for step."""

import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))  # the spawned ranks import the worker by plain name
import method_zoo_ddp_worker as workers
from rendezvous_store import hosted_store_env

WORLD = 2


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    out_dir = tmp_path_factory.mktemp("ddp")
    # The ranks join a store this process serves on a port it bound itself (never a found-free-then-released one).
    with hosted_store_env() as store:
        mp.spawn(workers.worker, args=(WORLD, store.port, str(out_dir)), nprocs=WORLD, join=True)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD)]


@pytest.mark.parametrize("method", list(workers.METHODS))
def test_ddp_matches_single_process(ranks, method):
    single = workers.train(method, rank=0, world=1)
    initial = workers.TinyModule(method).state_dict()
    for name, value in single.items():
        if name.endswith("weight"):
            # The run must move the weights, or equality would prove nothing (a 1/world_size gradient
            # bug would leave a gap of about half this movement). Biases are exempt: VICReg and Barlow
            # are blind to a shift of the last layer, so its bias legitimately never moves.
            assert (value - initial[name]).abs().max() > 1e-2, name
        for r in range(WORLD):
            torch.testing.assert_close(ranks[r][method][name], value, rtol=0, atol=1e-5)


def test_ranks_saw_a_real_process_group(ranks):
    assert [result["rank"] for result in ranks] == [(0, WORLD), (1, WORLD)]


def test_gather_with_grad_and_all_reduce_with_grad(ranks):
    xs, w_gathers, w_reduces = [], [], []
    for r in range(WORLD):
        g = torch.Generator().manual_seed(r)
        xs.append(torch.randn(3, 4, generator=g, dtype=torch.float64))
        w_gathers.append(torch.randn(3 * WORLD, 4, generator=g, dtype=torch.float64))
        w_reduces.append(torch.randn(3, 4, generator=g, dtype=torch.float64))
    for r, result in enumerate(ranks):
        probe = result["probe"]
        torch.testing.assert_close(probe["gathered"], torch.cat(xs))
        torch.testing.assert_close(probe["no_grad"], torch.cat(xs))
        torch.testing.assert_close(probe["reduced"], sum(xs))
        # Each rank's objective touches our rows through its own weights; the true gradient sums them all.
        want = sum(w[3 * r : 3 * (r + 1)] for w in w_gathers) + sum(w_reduces)
        torch.testing.assert_close(probe["grad"], want, rtol=1e-12, atol=1e-12)
