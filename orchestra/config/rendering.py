"""Resolving and writing a hundred nearly identical member configs without paying a hundred times for the same work.

Members of one sweep differ in a few values (``seed``, ``job_dir``); everything else resolves and prints the same.
``SharedResolution`` resolves a shared working config only where a member can differ: the values it set and the
``${...}`` interpolations (which may read those values). ``config_yaml`` prints each top-level section once per
distinct content. Both fall back to the plain, complete path whenever in doubt, so the output is always exactly what
``OmegaConf.to_container(resolve=True)`` and ``OmegaConf.to_yaml`` would give.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import yaml
from omegaconf import Container, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from orchestra.compat.omegaconf_compat import yaml_str_representer
from orchestra.config.compose import redact, resolved_container

Path_ = tuple[Any, ...]


def _walk(node: Container, path: Path_, interpolations: list[Path_]) -> bool:
    """Collects the paths of interpolations under ``node``; returns True if a mandatory value is missing."""
    missing = False
    keys: Iterable[Any] = node.keys() if isinstance(node, DictConfig) else range(len(node))
    for key in keys:
        if OmegaConf.is_interpolation(node, key):
            interpolations.append((*path, key))
        elif OmegaConf.is_missing(node, key):
            missing = True
        else:
            child = node[key]  # neither an interpolation nor missing: reading it resolves nothing
            if isinstance(child, DictConfig | ListConfig):
                missing = _walk(child, (*path, key), interpolations) or missing
    return missing


def _resolved_value(cfg: DictConfig, path: Path_) -> Any:
    node: Any = cfg
    for key in path:
        node = node[key]  # resolves interpolations on the way, as to_container(resolve=True) does
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, Container) else node


class SharedResolution:
    """Built from a working config in its pristine state; ``resolve`` is then called with a member applied to it."""

    def __init__(self, working: DictConfig) -> None:
        self.static = OmegaConf.to_container(working, resolve=False)
        self.interpolations: list[Path_] = []
        self.has_missing = _walk(working, (), self.interpolations)

    def resolve(self, cfg: DictConfig, changed: Iterable[str]) -> dict:
        """``cfg``: the working config with the member's overrides applied; ``changed``: the dotted keys they set."""
        if self.has_missing:
            return resolved_container(cfg)  # raises its one-line "config value ... is required"
        out = copy.deepcopy(self.static)
        try:
            for path in [*(tuple(key.split(".")) for key in changed), *self.interpolations]:
                target = out
                for key in path[:-1]:
                    target = target[key]
                target[path[-1]] = _resolved_value(cfg, path)
        except (OmegaConfBaseException, KeyError, IndexError, TypeError):
            return resolved_container(cfg)  # the complete path gives the exact answer (or the exact error)
        return out


class _ConfigDumper(yaml.CDumper if hasattr(yaml, "CDumper") else yaml.Dumper):  # type: ignore[misc]
    """libyaml's emitter with OmegaConf's rule for strings, so the file reads back exactly (as OmegaConf.to_yaml)."""


_ConfigDumper.add_representer(str, yaml_str_representer())
_sections: dict[tuple[str, str], str] = {}


def _dump(node: dict) -> str:
    return yaml.dump(node, Dumper=_ConfigDumper, default_flow_style=False, allow_unicode=True, sort_keys=False)


def config_yaml(container: dict) -> str:
    """A resolved member config as YAML, secret-looking values redacted: what OmegaConf.to_yaml writes, faster.

    A block mapping prints as the concatenation of its entries, so each top-level section is printed once per
    distinct content (found by its repr, which is cheap) and reused.
    """
    container = redact(container)
    if not container:
        return _dump(container)
    parts = []
    for key, value in container.items():
        fingerprint = (repr(key), repr(value))  # repr, unlike JSON, tells 1, 1.0, True and "1" apart
        if fingerprint not in _sections:
            _sections[fingerprint] = _dump({key: value})
        parts.append(_sections[fingerprint])
    return "".join(parts)
