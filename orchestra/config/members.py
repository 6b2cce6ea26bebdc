"""The configs of every member of a sweep, composed once per distinct choice of config groups.

A Hydra compose walks the defaults tree and loads every YAML file again: about 0.2 s per member, 18 s for a
100-member sweep that differs only in ``seed``. Hydra itself composes in two stages — the defaults list (config
group choices) first, then the plain ``key=value`` overrides applied onto the result in struct mode. We do the
same, caching the first stage: members that choose the same groups share one compose, and each member's value
overrides go through Hydra's own override step (same checks, so an unknown key still fails with the same one line).

Copying a composed config costs as much as resolving it, so a member whose overrides only replace existing leaf
values is applied to one shared working copy and undone afterwards; anything else (``+``, ``++``, ``~``, dict
values, replacing a whole node) gets a deep copy of its own.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from typing import Any

from omegaconf import DictConfig, OmegaConf

from orchestra.compat.hydra_compat import apply_value_overrides
from orchestra.compat.omegaconf_compat import interpolations_parsed_once, is_value_node, raw_value
from orchestra.config.compose import (
    _check_groups,
    _explain_override_error,
    _parse,
    compose,
    redact_overrides,
    resolved_container,
)
from orchestra.config.rendering import SharedResolution
from orchestra.config.validate import ConfigChecks, sweep_message, validation_view
from orchestra.errors import UserError


def _chooses_a_group(override) -> bool:
    """Mirrors Hydra's split: a key naming a config group folder (or Hydra's own) is a choice, not a value."""
    key = override.key_or_group
    if key.startswith("hydra") or override.package is not None:
        return True
    return not isinstance(override.value(), dict) and (resources.files("conf") / key).is_dir()


def _leaf(cfg: DictConfig, key: str) -> tuple[DictConfig, str] | None:
    """(parent, name) when ``key`` names an existing plain value (not a whole node), else None."""
    parent_path, _, name = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_path, throw_on_missing=False) if parent_path else cfg
    if not isinstance(parent, DictConfig) or name not in parent.keys():
        return None
    return (parent, name) if is_value_node(parent, name) else None


@functools.lru_cache(maxsize=4096)
def _parse_one(text: str) -> tuple:
    """Members repeat most of their overrides (``method=simclr`` in all hundred); the parsed form is only read."""
    return tuple(_parse([text]))


def _labels(members: list[list[str]]) -> list[str]:
    """``[index] overrides`` as the dry run lists members, keeping the overrides that tell members apart."""
    common = set(members[0]).intersection(*map(set, members[1:])) if len(members) > 1 else set()
    return [f"[{i}] " + " ".join(redact_overrides([o for o in m if o not in common] or m)) for i, m in
            enumerate(members)]


class MemberConfigs:
    """Validates every member at construction: an override Hydra refuses is one line for the first member that has
    it; bad values are collected over all members (``orchestra.config.validate``) and raised together. Then gives
    each member's resolved config as a plain dict."""

    def __init__(self, members: list[list[str]]) -> None:
        self._composed: dict[tuple[str, ...], DictConfig] = {}
        self._working: dict[tuple[str, ...], DictConfig] = {}
        self._shared: dict[tuple[str, ...], SharedResolution] = {}
        self._members: list[tuple[tuple[str, ...], list]] = []
        checks, found = ConfigChecks(), []
        for overrides in members:
            parsed = [override for text in overrides for override in _parse_one(text)]
            _check_groups(parsed)
            choices = tuple(o.input_line for o in parsed if _chooses_a_group(o))
            values = [o for o in parsed if not _chooses_a_group(o)]
            if choices not in self._composed:
                self._composed[choices] = compose(list(choices))
                self._working[choices] = copy.deepcopy(self._composed[choices])
                self._shared[choices] = SharedResolution(self._working[choices])
            self._members.append((choices, values))
            with self._applied(len(self._members) - 1) as cfg, interpolations_parsed_once():
                # job_dir is not chosen yet, and no checked section reads it: the sections checked resolve without it
                problems = checks.problems(validation_view(cfg))
            if problems:
                found.append((len(self._members) - 1, problems))
        if found:
            labels = _labels(members)
            raise UserError(sweep_message([(labels[i], problems) for i, problems in found], len(members)))

    def __len__(self) -> int:
        return len(self._members)

    def config(self, index: int) -> DictConfig:
        """A member's full config as its own object (unresolved), e.g. to read its launcher settings."""
        with self._applied(index) as cfg:
            return copy.deepcopy(cfg)

    def resolved(self, index: int, **values: Any) -> dict:
        """A member's config with ``values`` set first (e.g. job_dir, which other entries interpolate), resolved."""
        choices, overrides = self._members[index]
        # Members share their ${...} strings: each is parsed once (omegaconf_compat confines the cache to this block).
        with self._applied(index, values) as cfg, interpolations_parsed_once():
            if cfg is not self._working[choices]:  # a member with a deep copy of its own
                return resolved_container(cfg)
            return self._shared[choices].resolve(cfg, [o.key_or_group for o in overrides] + list(values))

    @contextmanager
    def _applied(self, index: int, extra: dict[str, Any] | None = None) -> Iterator[DictConfig]:
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        choices, overrides = self._members[index]
        working = self._working[choices]
        leaves = [_leaf(working, o.key_or_group) if self._replaces_a_value(o) else None for o in overrides]
        shared = all(leaf is not None for leaf in leaves)
        cfg = working if shared else copy.deepcopy(self._composed[choices])
        saved = [(parent, name, raw_value(parent, name)) for parent, name in leaves] if shared else []
        for key in extra or {}:
            parent, name = _leaf(cfg, key) or (None, key)
            if parent is not None and shared:
                saved.append((parent, name, raw_value(parent, name)))
        try:
            try:
                apply_value_overrides(overrides, cfg)  # Hydra's own step 2: same words
            except (HydraException, OmegaConfBaseException) as err:
                raise UserError(_explain_override_error(str(err), self._composed[choices])) from None
            for key, value in (extra or {}).items():
                OmegaConf.update(cfg, key, value, merge=False)
            yield cfg
        finally:
            for parent, name, value in reversed(saved):
                parent[name] = value

    @staticmethod
    def _replaces_a_value(override) -> bool:
        return not (override.is_add() or override.is_force_add() or override.is_delete()) and \
            not isinstance(override.value(), dict | list)
