"""Composing configs from the ``conf`` tree with Hydra, with one-line answers to bad overrides.

Imports Hydra but never torch, so listing options and validating a sweep stays fast.
"""

from __future__ import annotations

import re
from importlib import resources

from omegaconf import DictConfig, OmegaConf

from orchestra.errors import UserError

GROUPS = ("method", "backbone", "data", "logger", "trainer", "strategy", "launcher", "search", "experiment")


def group_options(group: str) -> list[str]:
    folder = resources.files("conf") / group
    return sorted(entry.name[: -len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def _parse(overrides: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed.extend(parser.parse_overrides([text]))
        except OverrideParseException:
            raise UserError(f"cannot read override '{text}'; write key=value, group=option or a,b,c for a sweep") \
                from None
    return parsed


def _check_groups(parsed) -> None:
    for override in parsed:
        group = override.key_or_group
        if group not in GROUPS:
            continue
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        known = group_options(group)
        for value in values:
            if str(value) not in known:
                raise UserError(f"unknown {group} '{value}'; known: {', '.join(known)}")


def _refuse_search_sweeps(parsed) -> None:
    """interval() (alone or under tag()) names a range to sample from, which only a search sweeper can do; a grid
    sweep would otherwise fail deep in Hydra's BasicSweeper."""
    for override in parsed:
        if override.is_sweep_override() and not override.is_discrete_sweep():
            key = override.get_key_element()
            raise UserError(f"override '{override.input_line}' samples from an interval, which needs a search "
                            f"sweeper (orchestra sweep ... search=optuna -m); or sweep a grid: write {key}=a,b,c, "
                            f"range(start,stop,step) or choice(a,b,c), e.g. {key}=0.001,0.01,0.1")


def expand(overrides: list[str]) -> list[list[str]]:
    """The members of a sweep: the cartesian product of every ``a,b,c`` override, Hydra's grammar."""
    from orchestra.compat.hydra_compat import sweep_members

    parsed = _parse(overrides)
    _check_groups(parsed)
    _refuse_search_sweeps(parsed)
    return sweep_members(parsed)


def _explain_override_error(message: str, base: DictConfig) -> str:
    match = re.search(r"Could not override '([^']+)'", message) or re.search(r"Key '([^']+)' is not in struct", message)
    if match:
        key = match.group(1)
        parent_path, _, _ = key.rpartition(".")
        parent = OmegaConf.select(base, parent_path) if parent_path else base
        if isinstance(parent, DictConfig):
            keys = ", ".join(sorted(str(k) for k in parent.keys()))
            where = f"under '{parent_path}'" if parent_path else "at the top level"
            return f"unknown config key '{key}'; keys {where}: {keys} (write +{key}=... to add a new key)"
        return f"unknown config key '{key}' (write +{key}=... to add a new key)"
    return message.strip().splitlines()[0]


def compose(overrides: list[str]) -> DictConfig:
    """The full config for one run; raises UserError with one line for anything Hydra would reject."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    parsed = _parse(overrides)
    _check_groups(parsed)
    _refuse_search_sweeps(parsed)  # before "run it with orchestra sweep", which cannot run it either
    for override in parsed:
        if override.is_sweep_override():
            raise UserError(f"override '{override.input_line}' is a sweep; run it with: orchestra sweep ... -m")
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="conf", version_base=None):
        try:
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
        except (HydraException, OmegaConfBaseException) as err:
            # Explain against the config this member would have had (its groups chosen), not the defaults.
            groups = [o.input_line for o in parsed if o.key_or_group in GROUPS]
            try:
                base = hydra_compose(config_name="config", overrides=groups)
            except (HydraException, OmegaConfBaseException) as group_err:  # the groups themselves (experiment=x)
                raise UserError(" ".join(line.strip() for line in str(group_err).splitlines() if line.strip())) \
                    from None
            raise UserError(_explain_override_error(str(err), base)) from None
    return cfg


def resolved_container(cfg: DictConfig) -> dict:
    """Interpolations resolved once, so a job directory's config.yaml is complete and readable on its own."""
    from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except MissingMandatoryValue as err:
        key = getattr(err, "full_key", None) or str(err).splitlines()[0]
        raise UserError(f"config value '{key}' is required; set it on the command line: {key}=...") from None
    except OmegaConfBaseException as err:
        missing = re.search(r"Missing mandatory value: ([\w.]+)", str(err))
        if missing:
            key = missing.group(1)
            raise UserError(f"config value '{key}' is required; set it on the command line: {key}=...") from None
        raise UserError(f"config cannot be resolved: {str(err).splitlines()[0]}") from None


SECRET_KEY = re.compile(r"(api_?key|token|secret|password|passwd)", re.IGNORECASE)


def redact(node):
    """A copy of a plain config container with the values of secret-looking keys replaced."""
    if isinstance(node, dict):
        return {k: "<redacted>" if SECRET_KEY.search(str(k)) else redact(v) for k, v in node.items()}
    if isinstance(node, list):
        return [redact(v) for v in node]
    return node


def redact_overrides(overrides: list[str]) -> list[str]:
    """Command-line overrides with the values of secret-looking keys replaced (``+logger.api_key=<redacted>``)."""
    redacted = []
    for text in overrides:
        key, sep, _ = text.partition("=")
        redacted.append(f"{key}=<redacted>" if sep and SECRET_KEY.search(key) else text)
    return redacted


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(redact(resolved_container(cfg))))
