"""`orchestra train method=swav` on the shipped digits with local crops: it learns (kNN above chance), its
prototypes and queue are in the checkpoint, a mid-epoch preemption resumes exactly (queue and prototypes
included), and wrong settings are one line each."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from orchestra_testkit import TINY, drop_callback, only_job_dir, read_json, signal_at, train_preempted

from orchestra.cli import main
from orchestra.config.compose import compose
from orchestra.job.body import run_job

# Two local crops instead of the method's 4 (CPU time). Two epochs, so the prototypes are frozen in the first and
# train in the second, and the queue (two steps of 64 images x 2 global views) is full and in use in the second.
SWAV = ["method=swav", *TINY, "trainer.max_epochs=2", "data.local_views=2", "module.hparams.proj_hidden_dim=64",
        "module.hparams.projection_dim=32", "module.hparams.prototypes=30", "module.hparams.queue_length=256",
        "module.hparams.queue_start_epoch=1"]
PROTOTYPES, QUEUE = "prototypes.layer.weight", "queues.swav_queue."


def overrides(output_root: Path, *extra: str) -> list[str]:
    return [*SWAV, f"output_root={output_root}", *extra]


def checkpoint_state(job_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(job_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory) -> Path:
    """One uninterrupted run, shared by the learning check and the resume comparison."""
    output_root = tmp_path_factory.mktemp("swav_whole")
    assert main(["train", *overrides(output_root)]) == 0
    return only_job_dir(output_root)


def test_swav_trains_on_digits_with_local_crops(whole_run):
    results = read_json(whole_run / "results.json")
    assert results["state"] == "COMPLETED"
    assert results["metrics"]["knn/top1"] > 0.3  # ten classes: chance is 0.1
    state = checkpoint_state(whole_run)
    prototypes = state[PROTOTYPES]
    assert prototypes.shape == (30, 32)
    # Used at unit length; one optimizer step after the last normalisation they are close to it, not on it.
    assert (prototypes.norm(dim=1) - 1).abs().max() < 0.1
    assert int(state[QUEUE + "filled"]) == 256 and state[QUEUE + "data"].abs().sum() > 0


def test_mid_epoch_preemption_resumes_exactly_with_queue_and_prototypes(whole_run, tmp_path, capsys):
    job_dir = train_preempted(overrides(tmp_path / "cut", *signal_at(epoch=1, batch=1)))
    assert "at epoch 1 after 1 batches" in capsys.readouterr().out
    saved = checkpoint_state(job_dir)
    assert int(saved[QUEUE + "filled"]) == 256  # the queue was full and in use when the signal came

    drop_callback(job_dir)
    resumed = run_job(job_dir)

    reference = read_json(whole_run / "results.json")
    assert resumed["state"] == "COMPLETED" and resumed["attempts"] == 2
    assert [r["step"] for r in resumed["history"]] == [r["step"] for r in reference["history"]]
    for key, value in reference["metrics"].items():
        assert resumed["metrics"][key] == pytest.approx(value, abs=1e-6), key
    want, got = checkpoint_state(whole_run), checkpoint_state(job_dir)
    for name in [PROTOTYPES, *(k for k in want if k.startswith(QUEUE))]:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6, msg=name)


@pytest.mark.parametrize(("override", "says"), [
    ("module.hparams.prototypes=0", "set module.hparams.prototypes >= 1"),
    ("data.local_views=0", "needs local crops: set data.local_views"),
], ids=["no-prototypes", "no-local-crops"])
def test_wrong_settings_are_one_line(tmp_path, capsys, override, says):
    code = main(["train", *overrides(tmp_path, "trainer.max_epochs=1", override)])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and says in lines[0], err
    assert "Traceback" not in err


def test_method_swav_alone_brings_its_local_crops():
    assert compose(["method=swav"]).data.local_views == 4
