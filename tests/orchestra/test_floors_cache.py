"""The floors cache: keyed by the exact data and initial weights, read back on a rerun, never on a changed input."""

import json

import torch
from orchestra_testkit import tiny_overrides

from orchestra.config.compose import compose
from orchestra.data.datamodule import build_datamodule
from orchestra.evaluation.floors import knn_floors
from orchestra.evaluation.floors_cache import cache_dir


def _member(tmp_path, seed: int = 0):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = compose(tiny_overrides(tmp_path, "simclr", f"seed={seed}"))
    torch.manual_seed(seed)
    datamodule = build_datamodule(OmegaConf.to_container(cfg.data, resolve=True), seed)
    datamodule.setup("fit")
    return instantiate(cfg.module, _convert_="all"), datamodule


def test_a_rerun_reads_the_floors_back_and_changed_weights_miss(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHESTRA_CACHE_DIR", str(tmp_path / "cache"))
    module, datamodule = _member(tmp_path)
    computed = knn_floors(module, datamodule)
    assert set(computed) == {"raw_pixels/knn_top1", "random_init/knn_top1"} and computed["raw_pixels/knn_top1"] > 0.5
    (entry,) = cache_dir().iterdir()
    entry.write_text(json.dumps({"raw_pixels/knn_top1": 0.125, "random_init/knn_top1": 0.25}))  # only a read gives it

    marker = {"raw_pixels/knn_top1": 0.125, "random_init/knn_top1": 0.25}
    rebuilt, same_data = _member(tmp_path)  # the same seed builds the same weights: a hit
    assert knn_floors(rebuilt, same_data) == marker

    with torch.no_grad():
        next(rebuilt.parameters()).view(-1)[0] += 1e-3  # one weight differs: computed again, not the marker
    changed = knn_floors(rebuilt, same_data)
    assert changed["raw_pixels/knn_top1"] == computed["raw_pixels/knn_top1"] and changed != marker
    assert len(list(cache_dir().iterdir())) == 2

    entry.write_text("{not json")  # an unreadable entry is recomputed, not an error
    assert knn_floors(*_member(tmp_path)) == computed
