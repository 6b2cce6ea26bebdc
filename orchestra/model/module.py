"""The Lightning Module: a plain forward function bound to an object that holds the method's parts."""

from __future__ import annotations

import functools
import importlib
import types
from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from method_zoo import TeacherStudentWrapper
from orchestra.errors import UserError
from orchestra.model import optim as optimizers
from orchestra.model.optim import build_optimizer, build_scheduler, named_param_groups

DEFAULT_OPTIM = {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "warmup_epochs": 0, "min_lr_ratio": 0.0}


def resolve_forward(forward: Callable | str) -> Callable:
    """A callable, or a dotted path such as ``method_zoo.simclr_forward``."""
    if callable(forward):
        return forward
    module_name, _, attribute = str(forward).rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError):
        import method_zoo

        known = ", ".join(f"method_zoo.{name}" for name in method_zoo.__all__ if name.endswith("_forward"))
        raise UserError(f"forward '{forward}' cannot be imported; known forwards: {known}") from None


def _describe(batch: Any) -> str:
    """What was passed instead of a batch dict: types and shapes, never values (a tensor's repr is pages long)."""
    if isinstance(batch, torch.Tensor):
        return f"a Tensor of shape {list(batch.shape)}"
    if isinstance(batch, list | tuple):
        parts = [f"Tensor {list(b.shape)}" if isinstance(b, torch.Tensor) else type(b).__name__ for b in batch[:4]]
        return f"a {type(batch).__name__} of {len(batch)} ({', '.join(parts)}{', ...' if len(batch) > 4 else ''})"
    return f"a {type(batch).__name__}"


def _checked(forward: Callable) -> Callable:
    """The forward, refusing anything but a batch dict up front: given a list or tensor it would fail deep inside
    with an error that prints the whole batch."""
    @functools.wraps(forward)
    def checked(self: Module, batch: Any, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(batch, Mapping):
            raise TypeError(f"{forward.__name__} takes a batch dict {{'image': Tensor [N*views, C, H, W], 'label': "
                            f"Tensor, 'sample_idx': Tensor (multi-view)}}; got {_describe(batch)}. "
                            f"Wrap it: {{'image': images, 'label': labels}}")
        return forward(self, batch, *args, **kwargs)
    return checked


HOST_KEYS = ("sample_idx", "batch_key")  # batch keys that stay on the host when a batch moves to the device

class Module(pl.LightningModule):
    """``Module(forward=..., backbone=..., projector=..., simclr_loss=..., optim=..., hparams=...)``.

    Every keyword becomes an attribute that the forward reads through ``self``. Evaluators that callbacks attach
    (probes, kNN) live in ``self.evaluators`` and feature queues in ``self.queues``: real submodules and buffers,
    so checkpoints, device moves and DDP see them and no method is ever patched.
    """

    def __init__(self, forward: Callable | str, optim: dict | None = None, hparams: dict | None = None,
                 channels_last: bool = False, compile: bool = False, **parts: Any) -> None:
        super().__init__()
        # Applied in configure_model (see orchestra.model.setup); `compile` would shadow nn.Module.compile.
        self.channels_last, self.compile_backbone = bool(channels_last), bool(compile)
        self.parallel_plan = None  # set by the job from the strategy config before fit
        self._model_configured = False
        self.forward_fn = resolve_forward(forward)
        self.forward = types.MethodType(_checked(self.forward_fn), self)
        for name, part in parts.items():
            setattr(self, name, part)
        self.optim = {**DEFAULT_OPTIM, **(optim or {})}
        named_param_groups(self, self.param_group_specs)  # a misnamed part fails here, not after the first epoch
        self.hparams.update(hparams or {})
        self.evaluators = nn.ModuleDict()
        self.queues = nn.ModuleDict()

    @property
    def forward_name(self) -> str:
        """The bound forward function's name, e.g. ``simclr_forward`` (``cfg.method_name`` is ``simclr``)."""
        return self.forward_fn.__name__

    def configure_model(self) -> None:
        if self._model_configured:  # Lightning may call it again (e.g. fit after validate); once is the contract
            return
        self._model_configured = True
        from orchestra.model.setup import configure

        configure(self, self.parallel_plan, self.channels_last, self.compile_backbone)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.channels_last and isinstance(batch, dict) and isinstance(batch.get("image"), torch.Tensor) \
                and batch["image"].dim() == 4:
            batch = {**batch, "image": batch["image"].contiguous(memory_format=torch.channels_last)}
        return batch

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # sample_idx only tells views apart; on the host, method_zoo.split_views checks it without a GPU sync per step.
        # batch_key (a raw batch, data.pipeline=gpu) is read by the view builder on the host for the same reason.
        if isinstance(batch, dict) and any(isinstance(batch.get(key), torch.Tensor) for key in HOST_KEYS):
            host = {key: batch[key] for key in HOST_KEYS if key in batch}
            rest = {key: value for key, value in batch.items() if key not in host}
            return {**super().transfer_batch_to_device(rest, device, dataloader_idx), **host}
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def training_step(self, batch: dict, batch_idx: int) -> dict:
        outputs = self(batch, stage="train")
        if not isinstance(outputs, dict) or "loss" not in outputs:
            keys = ", ".join(sorted(outputs)) if isinstance(outputs, dict) else type(outputs).__name__
            raise UserError(f"{self.forward_name} returned no 'loss' at stage 'train' (it returned: {keys}); "
                            f"a training forward must set out['loss']")
        loss = outputs["loss"]
        # Only on the steps the loggers write (every trainer.log_every_n_steps): each self.log costs about a
        # millisecond of host time, which a short GPU step cannot hide. Not prog_bar: Lightning turns progress-bar
        # values into Python floats every step, a GPU sync per step.
        every = max(1, int(self.trainer.log_every_n_steps or 1))
        log = (self.trainer.global_step + 1) % every == 0 or batch_idx + 1 >= self.trainer.num_training_batches
        if log:
            self.log("train/loss", loss, batch_size=self._batch_size(batch))
        for name, evaluator in self.evaluators.items():
            extra = evaluator.training_loss(outputs)
            if extra is not None:
                if log:
                    self.log(f"{name}/train_loss", extra, batch_size=self._batch_size(batch))
                loss = loss + extra
        return {**outputs, "loss": loss}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        outputs = self(batch, stage="val")
        for evaluator in self.evaluators.values():
            evaluator.validation_update(outputs)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        for evaluator in self.evaluators.values():
            for key, value in evaluator.validation_compute().items():
                self.log(key, value, prog_bar=True, rank_zero_only=True)

    def on_fit_start(self) -> None:
        # Found once per fit rather than by walking every module after every optimizer step.
        self._teachers = [part for part in self.modules() if isinstance(part, TeacherStudentWrapper)]
        self._total_steps = max(1, int(self.trainer.estimated_stepping_batches))

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, *args: Any, **kwargs: Any) -> None:
        end = self.optim.get("weight_decay_end")
        if end is not None:
            # Set here, before the step it is for, from the global step alone: a resume (mid-epoch too) continues
            # the same values, whatever the checkpointed groups held. Only the groups configure_optimizers marked.
            start, step = float(self.optim["weight_decay"]), self.trainer.global_step
            decay = optimizers.cosine_weight_decay(start, float(end), step, self._total_steps)
            for index in self._scheduled_decay:
                optimizer.param_groups[index]["weight_decay"] = decay
            every = max(1, int(self.trainer.log_every_n_steps or 1))
            if (self.trainer.global_step + 1) % every == 0 or batch_idx + 1 >= self.trainer.num_training_batches:
                self.log("optim/weight_decay", decay)
        super().optimizer_step(epoch, batch_idx, optimizer, *args, **kwargs)
        # After the real optimizer step only, so gradient accumulation does not run the EMA schedule faster.
        for teacher in self._teachers:
            teacher.update_teacher(self.trainer.global_step + 1, self._total_steps)

    @property
    def param_group_specs(self) -> list[dict]:
        """``optim.param_groups``: parts with options of their own, e.g. ``[{params: predictor, fixed_lr: true}]``."""
        return list(self.optim.get("param_groups") or [])

    def configure_optimizers(self) -> dict:
        # Group order is part of the checkpoint (the optimizer state is matched by position): the main group first
        # (the divergence guard reads its lr), then optim.param_groups in config order, then the evaluators.
        named = named_param_groups(self, self.param_group_specs)
        taken = {id(p) for p in self.evaluators.parameters()} | {id(p) for group in named for p in group["params"]}
        main = [p for p in self.parameters() if p.requires_grad and id(p) not in taken]
        groups: list[dict] = [{"params": main}, *named]
        # The weight-decay schedule drives the groups whose decay is optim.weight_decay: the main group and named
        # groups without a weight_decay of their own (never no-decay or evaluator groups). Kept by position here,
        # not as a group key, since loading a checkpoint replaces the groups' keys with the saved ones.
        self._scheduled_decay = [i for i, group in enumerate(groups) if "weight_decay" not in group]
        # optim.no_decay moves biases, norms and tokens to weight-decay-0 groups after these (main stays first)
        groups = optimizers.split_no_decay(self, groups, self.optim.get("no_decay"))
        for evaluator in self.evaluators.values():
            params = [p for p in evaluator.parameters() if p.requires_grad]
            if params:
                groups.append({"params": params, "lr": evaluator.lr, "weight_decay": 0.0, "evaluator": True,
                               "lars_exclude": True})
        optimizer = build_optimizer(groups=groups, **self.optim)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        steps_per_epoch = total / max(1, self.trainer.max_epochs or 1)
        warmup = int(self.optim.get("warmup_epochs", 0) * steps_per_epoch)
        scheduler = build_scheduler(optimizer, total, warmup, self.optim.get("min_lr_ratio", 0.0))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    @staticmethod
    def _batch_size(batch: dict) -> int:
        image = batch.get("image")
        return int(image.shape[0]) if isinstance(image, torch.Tensor) else 1
