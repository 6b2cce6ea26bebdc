"""`orchestra train method=dino` on the shipped digits: a tiny run trains, its teacher, centre and frozen prototypes are
checkpointed, a signal mid-epoch resumes to exactly the uninterrupted state, and a batch without local crops is one
line."""

from __future__ import annotations

import math

import pytest
import torch
from orchestra_testkit import TINY, drop_callback, read_json, signal_at, train_in_process, train_preempted

from orchestra.cli import main
from orchestra.config.compose import compose
from orchestra.job.body import run_job

# The method brings its own data section (4 local crops, the dino preset of the dataset). Narrow head: CPU time.
DINO = ["method=dino", "module.hparams.head_hidden_dim=64", "module.hparams.bottleneck_dim=32",
        "module.hparams.prototypes=256"]
TWO_EPOCHS = "trainer.max_epochs=2"  # epoch 0 with the prototypes frozen, epoch 1 training them


def _overrides(root, *extra: str) -> list[str]:
    return [*DINO, *TINY, TWO_EPOCHS, f"output_root={root}", *extra]


def _state(job_dir) -> dict[str, torch.Tensor]:
    return torch.load(job_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    return train_in_process(_overrides(tmp_path_factory.mktemp("whole")))


def test_dino_trains_end_to_end_with_teacher_and_centre_in_the_checkpoint(whole):
    results = read_json(whole / "results.json")
    assert results["state"] == "COMPLETED" and results["method"] == "dino"
    metrics = results["metrics"]
    assert metrics["knn/top1"] > 0.3, metrics  # ten classes: chance is 0.1
    assert math.isfinite(metrics["train/loss"])
    state = _state(whole)
    assert state["dino_loss.center"].shape == (256,) and state["dino_loss.center"].abs().sum() > 0
    teacher = [k for k in state if k.startswith(("backbone.teacher.", "projector.teacher.")) and k.endswith("weight")]
    assert "projector.teacher.last_layer.weight" in teacher
    for key in teacher:  # the EMA teacher lags its student
        assert not torch.equal(state[key], state[key.replace(".teacher.", ".student.")]), key


def test_signal_in_the_frozen_epoch_resumes_to_exactly_the_uninterrupted_state(whole, tmp_path, capsys):
    job_dir = train_preempted(_overrides(tmp_path, *signal_at(epoch=0, batch=2)))
    assert "at epoch 0 after 2 batches" in capsys.readouterr().out
    saved = _state(job_dir)
    assert saved["dino_loss.center"].abs().sum() > 0  # the centre of the steps already taken travels

    drop_callback(job_dir)
    resumed = run_job(job_dir)

    reference = read_json(whole / "results.json")
    assert resumed["state"] == "COMPLETED" and resumed["attempts"] == 2
    assert [r["step"] for r in resumed["history"]] == [r["step"] for r in reference["history"]]
    for key, value in reference["metrics"].items():
        assert resumed["metrics"][key] == pytest.approx(value, abs=1e-6), key
    # Student, teacher, centre and prototypes: the resumed run ends where the uninterrupted one does.
    want, got = _state(whole), _state(job_dir)
    for key in ("dino_loss.center", "projector.student.last_layer.weight", "projector.teacher.last_layer.weight",
                *(k for k in want if k.startswith("backbone."))):
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-6, msg=key)


def test_dino_without_local_crops_is_one_line(tmp_path, capsys):
    code = main(["train", *_overrides(tmp_path, "data.local_views=0", "trainer.max_epochs=1")])
    assert code != 0
    error = [line for line in capsys.readouterr().err.splitlines() if "dino_forward" in line]
    assert error == ["error: dino_forward needs local crops: set data.local_views=6 (and data.local_size)"], error


def test_method_dino_alone_brings_its_local_crops():
    data = compose(["method=dino"]).data
    assert (data.local_views, data.local_size, data.augment) == (4, 14, "dino_digits")
    data = compose(["method=dino", "data=cifar10"]).data  # the dataset keeps its crop size and its image family
    assert (data.local_views, data.local_size, data.augment) == (4, 16, "dino_natural")
