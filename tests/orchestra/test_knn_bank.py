"""The kNN bank at scale: ``callbacks.knn.bank_size`` picks a fixed seeded subset of the training rows (the same
at every validation and after a resume; all rows when the set is smaller), and ``trainer.check_val_every_n_epoch``
validates every N epochs but always at the last one. The protocol in results.json and the report says which.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from orchestra_testkit import drop_callback, read_json, signal_at, tiny_overrides, train_in_process, train_preempted
from PIL import Image

from orchestra.callbacks.validation_interval import validates_at
from orchestra.data.datamodule import ImageDataModule, bank_rows
from orchestra.job.body import run_job
from orchestra.jobstate.results import evaluation_protocol


class BankSpy(pl.Callback):
    """Appends the rows of the kNN bank of every validation to ``<job dir>/bank_rows.jsonl`` (survives a resume)."""

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rows = pl_module.evaluators["knn"].bank_rows.tolist()
        with open(Path(trainer.default_root_dir) / "bank_rows.jsonl", "a") as handle:
            handle.write(json.dumps({"epoch": trainer.current_epoch, "rows": rows}) + "\n")


SPY = ["+callbacks.spy._target_=test_knn_bank.BankSpy"]


def spied(job_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (job_dir / "bank_rows.jsonl").read_text().splitlines()]


def test_bank_rows_are_a_seeded_sorted_subset_or_all():
    rows = bank_rows(1000, 100, seed=3)
    assert rows is not None and len(rows) == 100 and len(set(rows.tolist())) == 100
    assert rows.tolist() == sorted(rows.tolist()) and 0 <= int(rows.min()) and int(rows.max()) < 1000
    assert torch.equal(rows, bank_rows(1000, 100, seed=3))  # a function of (total, size, seed) alone
    assert not torch.equal(rows, bank_rows(1000, 100, seed=4))
    assert bank_rows(1000, 1000, seed=3) is None and bank_rows(1000, 5000, 3) is None and bank_rows(10, None, 3) is None
    # spread over the whole set, not its head: a head would hold the first classes of sorted folders only
    assert int(rows.max()) > 800 and int(rows.min()) < 200


def test_array_bank_loader_yields_exactly_the_subset_rows():
    dm = ImageDataModule(train_limit=600, val_limit=10, eval_batch_size=128, seed=5)
    dm.setup("fit")
    want = bank_rows(600, 250, 5)
    for _ in range(2):  # every call (every validation) the same rows
        batches = list(dm.bank_dataloader(size=250))
        rows = torch.cat([b["sample_idx"] for b in batches])
        assert torch.equal(rows, want)
        labels = torch.cat([b["label"] for b in batches])
        assert torch.equal(labels, dm.train.labels[want])
        full = torch.cat([b["image"] for b in dm.bank_dataloader()])[want]
        torch.testing.assert_close(torch.cat([b["image"] for b in batches]), full)
    everything = torch.cat([b["sample_idx"] for b in dm.bank_dataloader(size=10_000)])
    assert torch.equal(everything, torch.arange(600))


def make_folders(root: Path, per_class: int = 6) -> Path:
    for split, count in (("train", per_class), ("val", 2)):
        for label, shade in (("a", 40), ("b", 200)):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (12, 12), (shade, i * 20, 0)).save(folder / f"{i}.png")
    return root


def test_folder_bank_takes_the_same_subset(tmp_path):
    dm = ImageDataModule(dataset="imagefolder", root=str(make_folders(tmp_path)), image_size=8, num_classes=2,
                         channels=3, eval_batch_size=5, augment="natural", seed=1)
    dm.setup("fit")
    want = bank_rows(12, 5, 1)
    batches = list(dm.bank_dataloader(size=5))
    assert torch.equal(torch.cat([b["sample_idx"] for b in batches]), want)
    assert torch.equal(torch.cat([b["label"] for b in batches]), (want >= 6).long())  # rows 0-5 are class a


def test_validates_every_n_epochs_and_always_the_last():
    assert [e for e in range(3) if validates_at(e, 2, 3)] == [1, 2]
    assert [e for e in range(7) if validates_at(e, 3, 7)] == [2, 5, 6]
    assert [e for e in range(4) if validates_at(e, 1, 4)] == [0, 1, 2, 3]
    assert [e for e in range(2) if validates_at(e, 10, 2)] == [1]


def test_protocol_states_the_bank_and_the_interval():
    subset = evaluation_protocol(train_images=1_281_167, bank_size=50_000, val_every=5)
    assert "a fixed seeded subset of 50000 of the 1281167 training images" in subset["knn"]
    assert subset["validation"] == "every 5 epochs and always at the last epoch"
    whole = evaluation_protocol(train_images=8000, bank_size=50_000, val_every=1)
    assert "(all 8000 training images)" in whole["knn"] and whole["validation"] == "every epoch"
    assert "all 300" in evaluation_protocol(300, None)["knn"]


def run_args(root: Path, *extra: str) -> list[str]:
    return tiny_overrides(root, "simclr", "data.train_limit=256", "trainer.max_epochs=3",
                          "trainer.check_val_every_n_epoch=2", "callbacks.knn.bank_size=100", *SPY, *extra)


def test_subset_bank_fixed_across_validations_and_a_resume_and_last_epoch_validates(tmp_path):
    whole = train_in_process(run_args(tmp_path / "whole"))
    reference = read_json(whole / "results.json")
    assert reference["state"] == "COMPLETED"
    assert [r["epoch"] for r in reference["history"]] == [1, 2]  # epoch 2 (the 2nd) and 3 (the last)
    want = bank_rows(256, 100, 0).tolist()
    assert [s["epoch"] for s in spied(whole)] == [1, 2] and all(s["rows"] == want for s in spied(whole))
    assert "fixed seeded subset of 100 of the 256 training images" in reference["evaluation"]["knn"]
    assert reference["evaluation"]["validation"] == "every 2 epochs and always at the last epoch"

    # cut in the first epoch, which does not validate: the mid-epoch save resumes it exactly
    job_dir = train_preempted(run_args(tmp_path / "cut", *signal_at(epoch=0, batch=2)))
    assert read_json(job_dir / "results.json")["state"] == "PREEMPTED"
    drop_callback(job_dir)
    resumed = run_job(job_dir)
    assert resumed["state"] == "COMPLETED" and resumed["attempts"] == 2
    assert [r["step"] for r in resumed["history"]] == [r["step"] for r in reference["history"]]
    for key, value in reference["metrics"].items():
        assert resumed["metrics"][key] == pytest.approx(value, abs=1e-6), key
    assert all(s["rows"] == want for s in spied(job_dir)) and len(spied(job_dir)) == 2


def test_bank_at_least_the_training_set_is_all_of_it(tmp_path):
    job_dir = train_in_process(tiny_overrides(tmp_path, "simclr", "callbacks.knn.bank_size=5000", *SPY))
    assert spied(job_dir)[-1]["rows"] == list(range(256))
    assert "(all 256 training images)" in read_json(job_dir / "results.json")["evaluation"]["knn"]


def test_bad_bank_size_is_one_line_before_the_run(tmp_path):
    from orchestra_testkit import run_cli

    result = run_cli(["train", *tiny_overrides(tmp_path, "simclr", "callbacks.knn.bank_size=0")], cwd=tmp_path)
    assert result.returncode != 0
    line = [ln for ln in result.stderr.splitlines() if "bank_size" in ln]
    assert line and "callbacks.knn.bank_size must be a whole number of training images, 1 or more, or null" in line[0]
    assert "Traceback" not in result.stderr and not (tmp_path / "train").exists()


def test_report_states_each_members_bank(tmp_path):
    from fabricated_sweeps import make_sweep, results_of

    from orchestra.reporting.summary import build

    small, large = evaluation_protocol(8000, 50_000, 1), evaluation_protocol(1_281_167, 50_000, 5)
    sweep_dir = make_sweep(tmp_path, [
        (["data=mnist10k"], "COMPLETED", results_of("COMPLETED", 0.9, evaluation=small)),
        (["data=imagenet"], "COMPLETED", results_of("COMPLETED", 0.5, evaluation=large))])
    lines = build(sweep_dir).protocol_lines()
    [knn] = [line for line in lines if line.startswith("knn: ")]
    assert knn.startswith("knn: differs between members: ")
    assert "(all 8000 training images)" in knn and "a fixed seeded subset of 50000 of the 1281167" in knn
    [validation] = [line for line in lines if line.startswith("validation: ")]
    assert "every epoch" in validation and "every 5 epochs and always at the last epoch" in validation
    same = make_sweep(tmp_path / "same", [(["seed=0"], "COMPLETED", results_of("COMPLETED", 0.9, evaluation=small)),
                                          (["seed=1"], "COMPLETED", results_of("COMPLETED", 0.8, evaluation=small))])
    assert f"knn: {small['knn']}" in build(same).protocol_lines()


def test_floors_use_the_same_subset_bank_as_the_online_knn():
    from orchestra.callbacks.knn import knn_predict
    from orchestra.evaluation.floors import knn_floors
    from orchestra.model.backbones import SmallCNN

    dm = ImageDataModule(train_limit=600, val_limit=200, eval_batch_size=200, seed=5)
    dm.setup("fit")
    torch.manual_seed(0)
    module = torch.nn.Module()  # only the raw-pixel floor is checked by hand; random_init needs a forward
    module.backbone = SmallCNN(1)
    module.forward = lambda batch, stage: {"embedding": module.backbone(batch["image"])}
    subset, full = knn_floors(module, dm, bank_size=50), knn_floors(module, dm)

    def pixels(loader):
        batches = list(loader)
        x = torch.cat([b["image"] for b in batches]).flatten(1)
        return torch.nn.functional.normalize(x, dim=1), torch.cat([b["label"] for b in batches])

    bank, bank_labels = pixels(dm.bank_dataloader(size=50))
    queries, labels = pixels(dm.val_dataloader())
    expected = float((knn_predict(queries, bank, bank_labels, 10, 20, 0.07) == labels).float().mean())
    assert bank.shape[0] == 50
    assert subset["raw_pixels/knn_top1"] == pytest.approx(expected, abs=1e-6)
    assert subset["raw_pixels/knn_top1"] != full["raw_pixels/knn_top1"]  # 50 images vote worse than 600
