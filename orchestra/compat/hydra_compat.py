"""The one place orchestra touches Hydra's private API (``hydra._internal``).

What the public API lacks:

- ``hydra.compose`` composes from scratch, walking the defaults tree and reading every YAML file again (about 0.2 s
  a member). Nothing public applies already-parsed ``key=value`` overrides onto a composed config with Hydra's own
  checks and error words; ``ConfigLoaderImpl._apply_overrides_to_config`` is exactly that second stage of compose.
- Nothing public expands a sweep (``a=1,2 b=x,y``) into its members without running a sweeper and a launcher;
  ``BasicSweeper.split_arguments`` (a class under ``hydra._internal``) is that cartesian product, Hydra's semantics.

Tested with hydra-core 1.3.x (pyproject bounds it below 1.4). ``tests/compat/test_compat_hydra.py`` fails with one
line naming the installed version when either name moves.
"""

from __future__ import annotations

from typing import Any

TESTED = "1.3"


def apply_value_overrides(overrides: list[Any], cfg: Any) -> None:
    """Applies parsed value overrides (Hydra ``Override`` objects) onto ``cfg`` in place, as Hydra's compose does
    after the defaults list: same struct-mode checks, same ``HydraException`` / ``ConfigCompositionException`` words
    ("Could not override 'x'", "Key 'x' is not in struct")."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    ConfigLoaderImpl._apply_overrides_to_config(overrides, cfg)


def sweep_members(parsed: list[Any]) -> list[list[str]]:
    """The members of a sweep from its parsed overrides: one list of ``key=value`` strings per member, in the order
    Hydra's basic sweeper runs them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    return [list(member) for batch in batches for member in batch]
