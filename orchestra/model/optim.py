"""Optimizers, parameter groups and the learning-rate schedule, built from the ``optim`` config section."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from orchestra.errors import UserError
from orchestra.model.lr_scaling import GROUP_KEYS

KNOWN_OPTIMIZERS = ("sgd", "adamw", "lars")


class LARS(torch.optim.Optimizer):
    """SGD with momentum whose step is rescaled per tensor by ``trust * ||w|| / ||g + wd * w||`` (You et al. 2017).

    Biases, normalisation weights (1-D tensors) and groups marked ``lars_exclude`` take plain SGD steps, as in the
    SimCLR/BYOL recipes.
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001) -> None:
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coefficient=trust_coefficient,
                        lars_exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if p.ndim > 1 and not group["lars_exclude"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(grad)
                    trust = torch.where((w_norm > 0) & (g_norm > 0),
                                        group["trust_coefficient"] * w_norm / g_norm, torch.ones_like(w_norm))
                    grad = grad.mul(trust)
                buf = self.state[p].get("momentum_buffer")
                if buf is None:
                    buf = self.state[p]["momentum_buffer"] = grad.clone()
                else:
                    buf.mul_(group["momentum"]).add_(grad)
                p.add_(buf, alpha=-group["lr"])
        return loss


def build_optimizer(name: str, groups: list[dict], lr: float, weight_decay: float, momentum: float = 0.9,
                    betas: tuple[float, float] = (0.9, 0.999), **_: object) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, betas=tuple(betas))
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise UserError(f"unknown optim.name '{name}'; known: {', '.join(KNOWN_OPTIMIZERS)}")


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float = 0.0):
    """Multiplier of the base lr: linear warm-up, then cosine decay to ``min_ratio``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def constant(step: int) -> float:
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                    min_ratio: float) -> LambdaLR:
    """Scheduled groups follow warm-up + cosine; evaluator groups (probes) and ``fixed_lr`` groups keep their base
    rate from the first step to the last (no warm-up either, as SimSiam's predictor)."""
    schedule = warmup_cosine(total_steps, warmup_steps, min_ratio)
    lambdas = [constant if group.get("evaluator") or group.get("fixed_lr") else schedule
               for group in optimizer.param_groups]
    return LambdaLR(optimizer, lambdas)


# Children of orchestra.Module that callbacks own; their parameters have groups of their own.
NOT_PARTS = ("evaluators", "queues")


def module_parts(root: nn.Module) -> list[str]:
    """The Module attributes a param group may name: its submodules and direct parameters."""
    names = [name for name, _ in root.named_children()] + [name for name, _ in root.named_parameters(recurse=False)]
    return [name for name in names if name not in NOT_PARTS]


def _named_parameters(root: nn.Module, path: str, where: str) -> list[nn.Parameter]:
    """The parameters under attribute ``path`` (dotted paths reach inside a part: ``projector.student``)."""
    head, parts = path.split(".")[0], module_parts(root)
    if head not in parts:
        raise UserError(f"{where}.params: '{path}' is not a part of the Module; its parts: {', '.join(parts)}")
    try:
        return list(root.get_submodule(path).parameters())
    except AttributeError:
        pass
    try:
        return [root.get_parameter(path)]
    except AttributeError:
        raise UserError(f"{where}.params: '{path}' names no submodule or parameter of '{head}'") from None


def named_param_groups(root: nn.Module, specs: Sequence[Mapping[str, Any]]) -> list[dict]:
    """The optimizer groups that ``optim.param_groups`` asks for, in its order.

    Each spec names Module parts (``params: predictor`` or a list) and may set ``lr``, ``weight_decay`` and
    ``fixed_lr``; unset options come from ``optim``. Only trainable parameters are taken (a frozen EMA teacher
    stays out), and a parameter named twice is refused: which group's options would win is not obvious.
    """
    groups, owner = [], {}
    for index, spec in enumerate(specs):
        where = f"optim.param_groups.{index}"
        if not isinstance(spec, Mapping):
            raise UserError(f"{where} must be a mapping like {{params: predictor, fixed_lr: true}}, got {spec!r}")
        unknown = sorted(set(map(str, spec)) - set(GROUP_KEYS))
        if unknown:
            raise UserError(f"{where} has unknown key(s) {', '.join(unknown)}; known: {', '.join(GROUP_KEYS)}")
        paths = spec.get("params")
        paths = [paths] if isinstance(paths, str) else list(paths or [])
        if not paths:
            raise UserError(f"{where}.params must name Module parts, e.g. {where}.params=predictor")
        params = []
        for path in map(str, paths):
            for param in _named_parameters(root, path, where):
                if not param.requires_grad:
                    continue
                if id(param) in owner:
                    raise UserError(f"{where}.params: '{path}' shares parameters with '{owner[id(param)]}'; "
                                    f"name each parameter in one group only")
                owner[id(param)] = path
                params.append(param)
        if not params:
            raise UserError(f"{where}.params: {', '.join(map(str, paths))} has no trainable parameters")
        group = {"params": params, "name": "+".join(map(str, paths)), "fixed_lr": bool(spec.get("fixed_lr", False))}
        group.update({key: float(spec[key]) for key in ("lr", "weight_decay") if spec.get(key) is not None})
        groups.append(group)
    return groups


# ``optim.no_decay: true`` means these rules: every 1-D tensor (biases, norm weights) and the ViT tokens and position
# embeddings, whose decay towards zero only hurts (the DeiT/DINO/MAE recipes all exempt them).
NO_DECAY_DEFAULT = ("1d", "pos_embed", "cls_token", "mask_token")


def no_decay_rules(setting: Any) -> tuple[list[str], bool]:
    """The rules ``optim.no_decay`` asks for and whether each named rule must match a parameter (only rules the user
    listed: the ``true`` shorthand names tokens a CNN lacks)."""
    if setting is None or setting is False:
        return [], False
    if setting is True:
        return list(NO_DECAY_DEFAULT), False
    rules = [setting] if isinstance(setting, str) else setting
    if not isinstance(rules, Sequence) or not rules or not all(isinstance(r, str) and r for r in rules):
        raise UserError(f"optim.no_decay must be true, false or a list of rules like [1d, pos_embed], got {setting!r}")
    return list(rules), True


def _exempt(name: str, param: nn.Parameter, rules: Sequence[str]) -> bool:
    """``1d`` takes every tensor of at most one dimension; any other rule is a parameter name (its last dotted
    component, so ``pos_embed`` finds ``backbone.pos_embed``) or a glob over the full name (``backbone.blocks.0.*``)."""
    leaf = name.rsplit(".", 1)[-1]
    return any(param.ndim <= 1 if rule == "1d" else leaf == rule or fnmatch.fnmatchcase(name, rule) for rule in rules)


def split_no_decay(root: nn.Module, groups: list[dict], setting: Any) -> list[dict]:
    """Each group's exempt parameters move to a group of their own with ``weight_decay`` 0 and the parent's other
    options (lr, fixed_lr), appended after all of ``groups`` so the decaying groups keep their positions (the main
    group stays first). A parameter stays in exactly one group: it is moved, never copied. Empty no-decay groups
    are left out; ``groups`` comes back unchanged when the setting is off."""
    rules, must_match = no_decay_rules(setting)
    if not rules:
        return groups
    names = {id(p): name for name, p in root.named_parameters()}
    matched: set[str] = set()
    decaying, exempt = [], []
    for group in groups:
        keep, move = [], []
        for param in group["params"]:
            name = names.get(id(param), "")
            hits = [rule for rule in rules if _exempt(name, param, [rule])]
            matched.update(hits)
            (move if hits else keep).append(param)
        decaying.append({**group, "params": keep})
        if move:
            name = f"{group['name']}/no_decay" if group.get("name") else "no_decay"
            exempt.append({**group, "params": move, "name": name, "weight_decay": 0.0, "no_decay": True})
    unmatched = [rule for rule in rules if rule not in matched and rule != "1d"] if must_match else []
    if unmatched:
        raise UserError(f"optim.no_decay: {', '.join(map(repr, unmatched))} matches no trainable parameter; a rule "
                        f"is 1d, a parameter name such as pos_embed, or a glob over full names such as backbone.*.bias")
    return decaying + exempt


def cosine_weight_decay(start: float, end: float, step: int, total_steps: int) -> float:
    """DINO's weight-decay schedule: cosine from ``start`` at step 0 to ``end`` at ``total_steps``."""
    progress = min(1.0, step / max(1, total_steps))
    return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))
