"""Online k-nearest-neighbour evaluation against a bank of unaugmented training embeddings."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from method_zoo.distributed import gather_in_dataset_order
from orchestra.callbacks.accuracy import Top1Counter
from orchestra.callbacks.keys import read_output
from orchestra.errors import UserError


def knn_predict(queries: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int, k: int,
                temperature: float) -> torch.Tensor:
    """Weighted vote of the k most cosine-similar bank rows, weights ``exp(sim / T)`` (Wu et al. 2018).

    Always in float32, also under bf16-mixed: bf16 resolves cosine similarities near 1 only to about 0.004, which
    turns the top-k of early, similar embeddings into ties (kNN fell to chance on a GPU smoke run).
    """
    with torch.autocast(device_type=queries.device.type, enabled=False):
        return _vote(F.normalize(queries.float(), dim=1), bank.float(), bank_labels, num_classes, k, temperature)


def _vote(queries: torch.Tensor, bank: torch.Tensor, bank_labels: torch.Tensor, num_classes: int, k: int,
          temperature: float) -> torch.Tensor:
    similarity = queries @ bank.T
    top_sim, top_idx = similarity.topk(min(k, bank.shape[0]), dim=1)
    votes = torch.zeros(queries.shape[0], num_classes, dtype=top_sim.dtype, device=queries.device)
    votes.scatter_add_(1, bank_labels[top_idx], (top_sim / temperature).exp())
    return votes.argmax(dim=1)


class KNNHead(nn.Module):
    def __init__(self, name: str, input: str, target: str, num_classes: int, k: int, temperature: float) -> None:
        super().__init__()
        self.name, self.input, self.target = name, input, target
        self.num_classes, self.k, self.temperature = num_classes, k, temperature
        # The bank is rebuilt before every validation, so it is not worth a place in the checkpoint.
        self.register_buffer("bank", torch.empty(0), persistent=False)
        self.register_buffer("bank_labels", torch.empty(0, dtype=torch.long), persistent=False)
        # which training rows the bank holds (all, or OnlineKNN's fixed subset), in bank order
        self.register_buffer("bank_rows", torch.empty(0, dtype=torch.long), persistent=False)
        self.top1 = Top1Counter()
        self.reported = False

    def training_loss(self, outputs: dict) -> None:
        return None

    def validation_update(self, outputs: dict) -> None:
        features = read_output(outputs, self.input, f"OnlineKNN '{self.name}'")
        targets = read_output(outputs, self.target, f"OnlineKNN '{self.name}'")
        if self.bank.numel() == 0 or targets.numel() == 0:
            return
        predictions = knn_predict(features, self.bank, self.bank_labels, self.num_classes, self.k, self.temperature)
        self.top1.update(predictions, targets)

    def validation_compute(self) -> dict[str, float]:
        value = self.top1.compute()
        self.top1.reset()
        return {f"{self.name}/top1": value}

    @torch.no_grad()
    def rebuild_bank(self, pl_module: pl.LightningModule, loader) -> None:
        """Embed this rank's share of the bank images, then gather every rank's share into dataset order.

        Each rank embeds 1/world of the images (all ranks run the same number of batches, which FSDP's
        parameter gathers need). Inputs pass the precision plugin as in validation (64-true, DeepSpeed's bf16).
        """
        trainer = pl_module.trainer
        features, labels, rows = [], [], []
        for batch in loader:
            batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
            batch = trainer.precision_plugin.convert_input(batch)
            with trainer.precision_plugin.val_step_context():
                outputs = pl_module(batch, stage="val")
            features.append(F.normalize(read_output(outputs, self.input, f"OnlineKNN '{self.name}'").float(), dim=1))
            labels.append(read_output(outputs, self.target, f"OnlineKNN '{self.name}'"))
            rows.append(batch["sample_idx"])
        local = sum(len(r) for r in rows)
        rows = torch.cat(rows).to(self.bank_labels.device)
        self.bank_rows, self.bank, self.bank_labels = gather_in_dataset_order(rows, rows, torch.cat(features),
                                                                              torch.cat(labels))
        if trainer.world_size > 1 and not self.reported:
            print(f"kNN bank: {local} of {len(self.bank)} images embedded on rank {trainer.global_rank}", flush=True)
            self.reported = True


class OnlineKNN(pl.Callback):
    """kNN top-1 on the validation split; the bank holds the embeddings of the unaugmented training images.

    ``bank_size``: embed a fixed seeded subset of that many training images (the data module's ``bank_rows``:
    the same rows at every validation, on every rank and after a resume), so validating a 1.28M-image run does
    not embed every image each time; None, or a size at least the training set's, takes all of them.
    """

    def __init__(self, name: str = "knn", input: str = "embedding", target: str = "label", num_classes: int = 10,
                 k: int = 20, temperature: float = 0.07, bank_size: int | None = None) -> None:
        if bank_size is not None and (isinstance(bank_size, bool) or not isinstance(bank_size, int) or bank_size < 1):
            raise UserError(f"callbacks.{name}.bank_size must be a whole number of training images, 1 or more, or "
                            f"null (all of them), got {bank_size!r}; set e.g. callbacks.{name}.bank_size=50000")
        self.name, self.input, self.target = name, input, target
        self.num_classes, self.k, self.temperature = num_classes, k, temperature
        self.bank_size = bank_size

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.name not in pl_module.evaluators:
            pl_module.evaluators[self.name] = KNNHead(self.name, self.input, self.target, self.num_classes, self.k,
                                                      self.temperature)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        loader = trainer.datamodule.bank_dataloader(sharded=True, size=self.bank_size)
        pl_module.evaluators[self.name].rebuild_bank(pl_module, loader)
