"""The one place orchestra touches OmegaConf's private API.

What the public API lacks:

- Reading one entry of a config without resolving it: whether ``parent.name`` is a plain value rather than a whole
  node, and the value as written (an interpolation kept as its ``${...}`` string). ``OmegaConf.to_container``
  gives the latter only by copying the whole config; ``Container._get_node`` and ``Node._value`` give it for one key.
  ``orchestra.config.members`` needs both to change a member's values on a shared config and put them back.
- Printing YAML with OmegaConf's rule for strings (quote those that would read back as another type) outside
  ``OmegaConf.to_yaml``; ``omegaconf._utils.OmegaConfDumper.str_representer`` is that rule.
- Caching interpolation parse trees. Resolving a config parses every ``${...}`` string with OmegaConf's ANTLR
  grammar, and the members of a sweep share the same strings: parsing each once makes validating a 100-member
  sweep markedly faster (see ``orchestra.config.members``). OmegaConf resolves through the module global
  ``omegaconf.base.parse``, so the cache has to stand in for it. It does so only inside
  ``interpolations_parsed_once()`` and only for the calling thread: while any thread is inside, the global is a
  dispatcher that sends that thread's calls to the cache and every other thread's to the original; the original
  is put back when the last one leaves. Nothing is replaced for the process at import or beyond that block.

Tested with omegaconf 2.3.x (pyproject bounds it below 2.4). ``tests/compat/test_compat_omegaconf.py`` fails with one
line naming the installed version when one of these names moves or stops being what resolution uses.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

TESTED = "2.3"


def is_value_node(parent: Any, name: Any) -> bool:
    """True when ``parent`` (a DictConfig or ListConfig) holds a plain value, not a whole node, at ``name``;
    nothing is resolved."""
    from omegaconf import ValueNode

    return isinstance(parent._get_node(name), ValueNode)


def raw_value(parent: Any, name: Any) -> Any:
    """The value at ``parent[name]`` as written, unresolved (``"${a}"`` stays that string); setting it back with
    ``parent[name] = value`` restores the entry."""
    return parent._get_node(name)._value()


def yaml_str_representer() -> Callable[[Any, str], Any]:
    """OmegaConf's PyYAML representer for ``str`` (what ``OmegaConf.to_yaml`` uses), for ``Dumper.add_representer``."""
    from omegaconf._utils import OmegaConfDumper

    return OmegaConfDumper.str_representer


# --- the interpolation parse cache --------------------------------------------------------------------------------

_lock = threading.Lock()
_inside = threading.local()  # .depth: how deep the calling thread is inside interpolations_parsed_once
_threads_inside = 0
_original: Callable[..., Any] = None  # type: ignore[assignment]  # set before _dispatch is installed


@functools.cache
def _cached(parse: Callable[..., Any]) -> Callable[..., Any]:
    # One cache per original function, kept across blocks: a sweep enters once per member and shares the strings.
    # Parse trees are only read while resolving, so one tree per distinct string may serve every thread.
    return functools.lru_cache(maxsize=4096)(parse)


def _dispatch(*args: Any, **kwargs: Any) -> Any:
    parse = _original  # kept after the block too: a call that looked the global up just before the restore still works
    if getattr(_inside, "depth", 0):
        return _cached(parse)(*args, **kwargs)
    return parse(*args, **kwargs)


@contextmanager
def interpolations_parsed_once() -> Iterator[None]:
    """Within the block, this thread's resolutions parse each distinct ``${...}`` string once (per process)."""
    global _threads_inside, _original
    import omegaconf.base

    with _lock:
        if _threads_inside == 0 and omegaconf.base.parse is not _dispatch:
            _original = omegaconf.base.parse
            omegaconf.base.parse = _dispatch
        depth = getattr(_inside, "depth", 0)
        if depth == 0:
            _threads_inside += 1
        _inside.depth = depth + 1
    try:
        yield
    finally:
        with _lock:
            _inside.depth -= 1
            if _inside.depth == 0:
                _threads_inside -= 1
                if _threads_inside == 0:
                    omegaconf.base.parse = _original


def parse_cache_info() -> Any:
    """``functools`` cache statistics of the parse cache for the original ``omegaconf.base.parse`` (tests, benches)."""
    import omegaconf.base

    return _cached(_original or omegaconf.base.parse).cache_info()
