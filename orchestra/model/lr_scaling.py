"""Learning rate scaled to the global batch: ``optim.lr`` is stated for ``optim.base_batch_size`` images.

Global batch = ``data.batch_size`` x ``trainer.accumulate_grad_batches``. ``data.batch_size`` is already the batch
over all devices and nodes (each rank takes a slice of it), so it equals per-device batch x devices x nodes and
changing the number of GPUs does not change the global batch or the learning rate.
"""

from __future__ import annotations

import math
from typing import Any

from orchestra.errors import UserError

RULES = {"none": lambda ratio: 1.0, "linear": lambda ratio: ratio, "sqrt": math.sqrt}
# The keys of one ``optim.param_groups`` entry (orchestra.model.optim builds the groups; here since this is torch-free
# and the config checks read it too). A group's own ``lr`` is stated for base_batch_size, like ``optim.lr``.
GROUP_KEYS = ("params", "lr", "weight_decay", "fixed_lr")


def scaled_lr(lr: float, global_batch: int, base_batch_size: int, rule: str) -> float:
    if rule not in RULES:
        raise UserError(f"unknown optim.lr_scaling '{rule}'; use one of: {', '.join(RULES)}")
    if base_batch_size <= 0:
        raise UserError(f"optim.base_batch_size={base_batch_size} must be positive (e.g. 256)")
    return lr * RULES[rule](global_batch / base_batch_size)


def apply_lr_scaling(cfg: Any) -> dict[str, Any]:
    """Set ``cfg.module.optim.lr`` (the Module's copy of ``optim``) and every ``param_groups`` entry's own ``lr`` to
    the scaled rate, by the same rule, so a group keeps its ratio to the rest at any batch size; returns what to
    record. A group without its own ``lr`` takes the scaled ``optim.lr``."""
    optim = cfg.module.optim if "optim" in cfg.module else cfg.optim
    rule = str(optim.get("lr_scaling", "none"))
    base = int(optim.get("base_batch_size", 256))
    accumulation = int(cfg.trainer.get("accumulate_grad_batches", 1) or 1)
    global_batch = int(cfg.data.batch_size) * accumulation
    base_lr = float(optim.lr)
    lr = scaled_lr(base_lr, global_batch, base, rule)
    optim.lr = lr
    record = {"lr": lr, "base_lr": base_lr, "lr_scaling": rule, "base_batch_size": base, "global_batch": global_batch,
              "batch_size": int(cfg.data.batch_size), "accumulate_grad_batches": accumulation}
    groups = []
    for group in optim.get("param_groups") or []:
        if group.get("lr") is not None:
            group.lr = scaled_lr(float(group.lr), global_batch, base, rule)
        params = group.get("params")
        groups.append({"params": params if isinstance(params, str) else "+".join(map(str, params or [])),
                       "lr": float(group.lr) if group.get("lr") is not None else lr,
                       "fixed_lr": bool(group.get("fixed_lr", False))})
    if groups:
        record["param_groups"] = groups
    return record


def describe(record: dict[str, Any]) -> str:
    batch = (f"global batch {record['global_batch']} = data.batch_size {record['batch_size']} x accumulate "
             f"{record['accumulate_grad_batches']}")
    groups = "".join(f"; {g['params']} lr {g['lr']:.6g}{' fixed' if g['fixed_lr'] else ''}"
                     for g in record.get("param_groups", []))
    if record["lr_scaling"] == "none":
        return f"lr {record['lr']:.6g} (optim.lr_scaling=none; {batch}){groups}"
    return (f"lr {record['lr']:.6g} = {record['base_lr']:.6g} scaled {record['lr_scaling']} from batch "
            f"{record['base_batch_size']} to {batch}{groups}")
