"""Checks of the ``optim`` section (and of the callbacks' own learning rates): rates, ranges, the lr-scaling rule,
``param_groups`` and the ViT options, one line per problem. Torch-free, like the rest of the validation."""

from __future__ import annotations

import math
from typing import Any

from orchestra.config.values import MISSING, is_int, real

# orchestra.Module's keywords that are settings, not parts an optim.param_groups entry could name
MODULE_SETTINGS = ("forward", "optim", "hparams", "channels_last", "compile")


def rate_problem(key: str, value: Any) -> str | None:
    if value == MISSING:
        return None
    rate = real(value)
    if isinstance(value, str):  # lr_scaling reads it with float(): a quoted number still works
        try:
            rate = float(value) if math.isfinite(float(value)) else None
        except ValueError:
            rate = None
    if rate is None or rate <= 0:
        return f"{key} must be a positive number, got {value!r}; set e.g. {key}=0.001"
    return None


def optim_problems(cfg: dict) -> list[str]:
    optim = cfg.get("optim")
    if not isinstance(optim, dict):
        return []
    problems = [rate_problem(f"optim.{k}", v) for k, v in optim.items() if k == "lr" or str(k).endswith("_lr")]
    callbacks = cfg.get("callbacks") if isinstance(cfg.get("callbacks"), dict) else {}
    problems += [rate_problem(f"callbacks.{name}.lr", cb["lr"]) for name, cb in callbacks.items()
                 if isinstance(cb, dict) and "lr" in cb]
    # (key, lowest, highest, example): ranges the optimizers and the schedule assume
    ranges = [("weight_decay", 0.0, math.inf, "1e-4"), ("momentum", 0.0, 1.0, "0.9"),
              ("warmup_epochs", 0.0, math.inf, "1"), ("min_lr_ratio", 0.0, 1.0, "0.0")]
    for key, low, high, example in ranges:
        value = optim.get(key, 0.0)
        if value != MISSING and (real(value) is None or not low <= value <= high):
            span = f"at least {low:g}" if high == math.inf else f"from {low:g} to {high:g}"
            problems.append(f"optim.{key} must be a number {span}, got {value!r}; set e.g. optim.{key}={example}")
    base = optim.get("base_batch_size", 1)
    if base != MISSING and (not is_int(base) or base < 1):
        problems.append(f"optim.base_batch_size must be a positive whole number, got {base!r}; "
                        f"set e.g. optim.base_batch_size=256")
    from orchestra.model.lr_scaling import RULES  # torch-free

    rule = optim.get("lr_scaling", "none")
    if rule != MISSING and rule not in RULES:
        problems.append(f"optim.lr_scaling={rule!r} is not a rule; use one of: {', '.join(RULES)}")
    problems += param_group_problems(optim.get("param_groups"), cfg.get("module"))
    problems += vit_optim_problems(optim)
    return [p for p in problems if p]


def vit_optim_problems(optim: dict) -> list[str]:
    """``optim.no_decay`` (true, false or a list of rules) and ``optim.weight_decay_end`` (null or a number at least
    0); whether a rule matches a parameter only the built Module can tell."""
    problems = []
    rules = optim.get("no_decay", False)
    if rules not in (None, True, False, MISSING) and not (
            isinstance(rules, list) and rules and all(isinstance(r, str) and r for r in rules)):
        problems.append(f"optim.no_decay must be true, false or a list of rules, got {rules!r}; "
                        f"set e.g. optim.no_decay=[1d,pos_embed,cls_token]")
    end = optim.get("weight_decay_end")
    if end is not None and end != MISSING and (real(end) is None or end < 0):
        problems.append(f"optim.weight_decay_end must be null (constant) or a number at least 0, got {end!r}; "
                        f"set e.g. optim.weight_decay_end=0.4")
    return problems


def param_group_problems(groups: Any, module: Any) -> list[str]:
    """``optim.param_groups``: a list of ``{params: <Module part or parts>, lr, weight_decay, fixed_lr}``. Only a
    path's first name is checked here (the Module's parts are its config keys); the Module checks the rest."""
    from orchestra.model.lr_scaling import GROUP_KEYS  # torch-free

    if groups is None or groups == MISSING:
        return []
    example = "optim.param_groups=[{params:predictor,fixed_lr:true}]"
    if not isinstance(groups, list):
        return [f"optim.param_groups must be a list of groups, got {groups!r}; set e.g. {example}"]
    parts = sorted(k for k in module if not k.startswith("_") and k not in MODULE_SETTINGS) \
        if isinstance(module, dict) else None
    problems: list[str | None] = []
    for index, group in enumerate(groups):
        key = f"optim.param_groups.{index}"
        if not isinstance(group, dict):
            problems.append(f"{key} must be a mapping, got {group!r}; set e.g. {example}")
            continue
        unknown = sorted(set(map(str, group)) - set(GROUP_KEYS))
        if unknown:
            problems.append(f"{key} has unknown key(s) {', '.join(unknown)}; use: {', '.join(GROUP_KEYS)}")
        names = group.get("params")
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            problems.append(f"{key}.params must name a Module part or a list of them, got {group.get('params')!r}; "
                            f"set e.g. {key}.params=predictor")
        elif parts is not None:
            problems += [f"{key}.params: '{name}' is not a part of the Module; its parts: {', '.join(parts)}"
                         for name in names if name.split(".")[0] not in parts]
        if "lr" in group and group["lr"] is not None:
            problems.append(rate_problem(f"{key}.lr", group["lr"]))
        decay = group.get("weight_decay")
        if decay is not None and decay != MISSING and (real(decay) is None or decay < 0):
            problems.append(f"{key}.weight_decay must be a number at least 0, got {decay!r}; set e.g. "
                            f"{key}.weight_decay=0")
        if not isinstance(group.get("fixed_lr", False), bool):
            problems.append(f"{key}.fixed_lr must be true or false, got {group['fixed_lr']!r}")
    return [p for p in problems if p]
