"""Nothing recorded is lost, and nothing that did not train reads COMPLETED.

- A COMPLETED job started again (over a truncated last.ckpt) runs nothing and changes no file.
- An unreadable last.ckpt is moved aside (kept, bytes intact) and the member resumes from previous.ckpt — to the
  metrics of an uninterrupted run — or, with both unreadable, from scratch; history and metrics.csv only grow.
- A diverging run (optim.lr=1e6) ends DIVERGED, exit 65, with the step and lr, and leaves no non-finite checkpoint;
  a loss that turns NaN is caught at its first bad step even between the steps the guard reads it.
- A run with no optimizer step ends FAILED in one line, never COMPLETED with nan metrics.
"""

from __future__ import annotations

import csv
import math
import signal
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from orchestra_testkit import (
    drop_callback,
    only_job_dir,
    read_json,
    signal_at,
    tiny_overrides,
    train_in_process,
    train_preempted,
)

from orchestra.callbacks.divergence import Diverged, DivergenceGuard
from orchestra.cli import main
from orchestra.config.compose import compose
from orchestra.errors import UserError
from orchestra.job.body import run_job
from orchestra.jobstate.job_dir import prepare_job_dir

EPOCHS = "trainer.max_epochs=3"
PREEMPT_IN_EPOCH_2 = signal_at(epoch=2, batch=1, signum=signal.SIGTERM)


def _snapshot(job_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(job_dir)): p.read_bytes() for p in sorted(job_dir.rglob("*")) if p.is_file()}


def _csv_rows(job_dir: Path) -> list[dict[str, str]]:
    with open(job_dir / "csv" / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]


def _truncate(path: Path) -> bytes:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return data[: len(data) // 2]


def _preempted_run(root: Path, capsys) -> Path:
    """A run stopped by SIGTERM at epoch 2 batch 1: last.ckpt saved there, previous.ckpt from epoch 1's end."""
    job_dir = train_preempted(tiny_overrides(root, "simclr", EPOCHS, "logger=csv", *PREEMPT_IN_EPOCH_2))
    capsys.readouterr()
    drop_callback(job_dir)
    return job_dir


def test_completed_job_started_again_over_a_truncated_checkpoint_changes_nothing(tmp_path, capsys):
    job_dir = train_in_process(tiny_overrides(tmp_path, "simclr", "logger=csv"))
    _truncate(job_dir / "checkpoints" / "last.ckpt")
    before = _snapshot(job_dir)
    capsys.readouterr()

    results = run_job(job_dir)

    assert results["state"] == "COMPLETED"
    assert "already COMPLETED; nothing to run" in capsys.readouterr().out
    assert _snapshot(job_dir) == before


def test_unreadable_last_checkpoint_is_kept_aside_and_the_previous_one_resumes_exactly(
        tmp_path, capsys, uninterrupted_results):
    reference = uninterrupted_results("simclr", EPOCHS)
    job_dir = _preempted_run(tmp_path, capsys)
    first = read_json(job_dir / "results.json")
    rows_before = _csv_rows(job_dir)
    assert first["state"] == "PREEMPTED" and len(first["history"]) == 2
    damaged = _truncate(job_dir / "checkpoints" / "last.ckpt")

    resumed = run_job(job_dir)

    out = capsys.readouterr().out
    (aside,) = (job_dir / "checkpoints").glob("last.ckpt.unreadable-*")
    assert aside.read_bytes() == damaged  # kept as it was
    assert f"moved it to {aside.name}" in out and "resuming from previous.ckpt instead" in out
    assert resumed["state"] == "COMPLETED" and resumed["attempts"] == 2
    assert resumed["history"][:2] == first["history"]
    assert [r["step"] for r in resumed["history"]] == [r["step"] for r in reference["history"]]
    for key, value in reference["metrics"].items():
        assert resumed["metrics"][key] == pytest.approx(value, abs=1e-6), key
    rows_after = _csv_rows(job_dir)
    assert rows_after[: len(rows_before)] == rows_before and len(rows_after) > len(rows_before)
    assert {row["attempt"] for row in rows_after} == {"1", "2"}


def test_with_no_readable_checkpoint_the_member_starts_over_and_keeps_its_history(tmp_path, capsys):
    job_dir = _preempted_run(tmp_path, capsys)
    first = read_json(job_dir / "results.json")
    for name in ("last.ckpt", "previous.ckpt"):
        _truncate(job_dir / "checkpoints" / name)

    resumed = run_job(job_dir)

    out = capsys.readouterr().out
    assert "no readable checkpoint left; training starts from scratch" in out
    assert len(list((job_dir / "checkpoints").glob("*.unreadable-*"))) == 2
    assert resumed["state"] == "COMPLETED"
    assert resumed["history"][:2] == first["history"]  # attempt 1's epochs stay, beside attempt 2's replay
    assert [(r["attempt"], r["epoch"]) for r in resumed["history"]] == [(1, 0), (1, 1), (2, 0), (2, 1), (2, 2)]


def test_a_diverging_run_ends_diverged_with_its_step_and_lr(tmp_path, capsys):
    code = main(["train", *tiny_overrides(tmp_path, "simclr", "optim.lr=1e6", "trainer.max_epochs=2")])

    assert code == 65
    job_dir = only_job_dir(tmp_path)
    results = read_json(job_dir / "results.json")
    assert results["state"] == "DIVERGED"
    divergence = results["divergence"]
    assert divergence["lr"] == pytest.approx(1e6) and divergence["epoch"] == 0 and 1 <= divergence["step"] <= 4
    assert f"at step {divergence['step']}" in results["error"] and "lower optim.lr" in results["error"]
    assert "DIVERGED" in capsys.readouterr().err
    assert not (job_dir / "checkpoints" / "last.ckpt").exists()  # the non-finite state was never saved


class _NanAtStep(pl.LightningModule):
    def __init__(self, bad_step: int) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.bad_step = bad_step

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).pow(2).mean()
        return loss * math.nan if self.global_step + 1 == self.bad_step else loss

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.randn(64, 2))
        return torch.utils.data.DataLoader(data, batch_size=4)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.parametrize("log_every", [1, 50])
def test_a_nan_loss_is_reported_at_its_first_step(log_every):
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, log_every_n_steps=log_every, callbacks=[DivergenceGuard()])
    with pytest.raises(Diverged) as stop:
        trainer.fit(_NanAtStep(bad_step=3))
    assert stop.value.details["step"] == 3 and stop.value.details["what"] == "loss"
    # read every step, it stops at once; read every 50, at the epoch's last batch (the 16th), never later
    assert trainer.global_step == (3 if log_every == 1 else 16)


def test_a_run_without_an_optimizer_step_fails_in_one_line(tmp_path):
    # Written past the validation step on purpose: the body's own check is what is tested here.
    cfg = compose(tiny_overrides(tmp_path, "simclr", "trainer.max_epochs=0"))
    prepare_job_dir(tmp_path / "job", cfg)

    with pytest.raises(UserError, match="no optimizer step"):
        run_job(tmp_path / "job")
    results = read_json(tmp_path / "job" / "results.json")
    assert results["state"] == "FAILED" and "no optimizer step" in results["error"]
    assert "\n" not in results["error"]
