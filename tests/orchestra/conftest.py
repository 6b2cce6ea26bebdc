"""Finished local sweeps shared by the report and linear-evaluation tests (each is run once per session), and
uninterrupted reference runs shared by the resume tests.

Tests that change files copy the sweep directory first (``shutil.copytree``): a copied sweep reports and evaluates
its own members, so the shared one stays as the sweep left it.
"""

from __future__ import annotations

import copy
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from orchestra_testkit import TINY, read_json, run_cli, tiny_overrides, train_in_process

# One override list for every member: keys a method lacks are added with ++ (unused there), so all three methods
# get narrow heads.
NARROW_HEADS = ["++module.hparams.proj_hidden_dim=64", "++module.hparams.proj_dim=32",
                "++module.hparams.pred_hidden_dim=64", "++module.hparams.projection_dim=32"]
THREE_METHODS = ["method=simclr,byol,vicreg", "seed=0,1"]
FAILING_SEED = 1
# seed 1 raises at the start of training (a real exception in the member's process); seed 0 completes.
ONE_SEED_FAILS = ["method=simclr", "seed=0,1", "+callbacks.fail._target_=fault_callbacks.FailForSeed",
                  "+callbacks.fail.seed=${seed}", f"+callbacks.fail.fail_for={FAILING_SEED}"]


def _run_sweep(tmp_path_factory: pytest.TempPathFactory, name: str,
               overrides: list[str]) -> tuple[Path, subprocess.CompletedProcess[str]]:
    root = tmp_path_factory.mktemp(name)
    result = run_cli(["sweep", *overrides, *TINY, "trainer.limit_train_batches=2", *NARROW_HEADS,
                      f"output_root={root / 'out'}", "-m"], cwd=root, timeout=600)
    sweep_dirs = list((root / "out" / "sweeps").iterdir()) if (root / "out" / "sweeps").exists() else []
    assert len(sweep_dirs) == 1, result.stdout[-3000:] + result.stderr[-3000:]
    return sweep_dirs[0], result


@pytest.fixture(scope="session")
def finished_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """3 methods x 2 seeds, all COMPLETED; returns the sweep directory and the sweep command's output."""
    sweep_dir, result = _run_sweep(tmp_path_factory, "three-methods", THREE_METHODS)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return sweep_dir, result


@pytest.fixture(scope="session")
def sweep_with_failure(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """simclr with seeds 0 and 1, where seed 1's training raised: one COMPLETED and one FAILED member."""
    sweep_dir, result = _run_sweep(tmp_path_factory, "one-fails", ONE_SEED_FAILS)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]  # a member failed
    return sweep_dir, result


@pytest.fixture(scope="session")
def uninterrupted_results(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., dict]:
    """``uninterrupted_results(method, *overrides)``: results.json of an uninterrupted tiny run (tiny_overrides)
    with those overrides, trained in this process the first time it is asked for and shared from then on (each
    caller gets its own copy). The reference that every resume test compares its interrupted run with.
    """
    cache: dict[tuple[str, ...], dict] = {}

    def results(method: str, *overrides: str) -> dict:
        key = (method, *overrides)
        if key not in cache:
            root = tmp_path_factory.mktemp(f"uninterrupted-{method}")
            cache[key] = read_json(train_in_process(tiny_overrides(root, method, *overrides)) / "results.json")
        return copy.deepcopy(cache[key])

    return results
