"""A search sweep's overrides -> the fixed overrides and a search space of Optuna distributions.

The grammar is Hydra's own (the one its Optuna sweeper reads), parsed by Hydra's public ``OverridesParser``:
``interval(a, b)`` is a float range, ``tag(log, interval(a, b))`` its log-uniform form, ``tag(int, ...)`` an integer
range, ``range(start, stop, step)`` a stepped range (stop excluded), ``choice(a, b)`` and a plain comma list ``a,b``
a categorical choice. Under ``search=optuna`` a comma list is therefore NOT a grid: the study draws from it, as
Hydra's Optuna sweeper does, and one study covers every value. One study per grid point was the other option; it
would multiply studies, budgets and reports for what a categorical parameter already expresses (run one sweep per
value to get separate studies).

Every problem is one line (``UserError``): a search expression without ``search=optuna``, ``search=optuna``
without a search expression, ``interval`` with low >= high, ``log`` with a bound <= 0, a grid sampler over a
continuous interval. Keys are checked against the composed config by ``orchestra.search.plan``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from orchestra.errors import UserError

SEARCH_GROUP = "search"
SEARCHERS = ("optuna",)


@dataclass
class SearchSpace:
    """The overrides every trial shares (``search=optuna`` included) and the parameters the study chooses."""

    fixed: list[str]
    distributions: dict[str, Any] = field(default_factory=dict)  # key -> optuna BaseDistribution
    text: dict[str, str] = field(default_factory=dict)  # key -> the expression as typed (for the manifest)
    added: set[str] = field(default_factory=set)  # keys written +key=... (they need not exist in the config)

    def to_json(self) -> dict[str, str]:
        from optuna.distributions import distribution_to_json

        return {key: distribution_to_json(d) for key, d in self.distributions.items()}


def _parse(overrides: list[str]) -> list:
    from orchestra.config.compose import _parse as parse_overrides

    return parse_overrides(overrides)


def search_choice(overrides: list[str]) -> str | None:
    """``optuna`` when the overrides choose ``search=optuna``, else None (a grid sweep), without composing."""
    for override in _parse(overrides):
        if override.key_or_group == SEARCH_GROUP and not override.is_sweep_override():
            value = str(override.value())
            return value if value in SEARCHERS else None
    return None


def is_search_expression(override) -> bool:
    """interval() and tag() only mean something to a search; choice/range/a,b are grids without one."""
    if not override.is_sweep_override():
        return False
    return not override.is_discrete_sweep() or bool(getattr(override.value(), "tags", None))


def refuse_search_without_optuna(overrides: list[str]) -> None:
    for override in _parse(overrides):
        if is_search_expression(override):
            key = override.get_key_element()
            raise UserError(f"'{override.input_line}' is a search expression, which needs a search sweeper: add "
                            f"search=optuna (and search.trials=N); or sweep a grid: {key}=a,b,c, "
                            f"range(start,stop,step) or choice(a,b,c)")


def _interval(text: str, sweep) -> Any:
    from optuna.distributions import FloatDistribution, IntDistribution

    low, high = sweep.start, sweep.end
    log, as_int = "log" in sweep.tags, "int" in sweep.tags
    if low is None or high is None or not low < high:
        raise UserError(f"'{text}': interval needs low < high, got low={low} and high={high}; e.g. interval(1e-4, "
                        f"1e-1)")
    if log and low <= 0:
        raise UserError(f"'{text}': a log scale needs bounds > 0, got low={low}; e.g. tag(log, interval(1e-4, 1e-1))")
    if as_int:
        if low != math.floor(low) or high != math.floor(high):
            raise UserError(f"'{text}': tag(int, ...) needs whole-number bounds, got {low} and {high}")
        return IntDistribution(int(low), int(high), log=log)
    return FloatDistribution(float(low), float(high), log=log)


def _range(text: str, sweep) -> Any:
    from optuna.distributions import FloatDistribution, IntDistribution

    start, stop, step = sweep.start, sweep.stop, sweep.step if sweep.step is not None else 1
    if start is None or stop is None or step <= 0 or not start < stop:
        raise UserError(f"'{text}': range needs start < stop and a step > 0, e.g. range(1, 10, 2)")
    count = math.ceil((stop - start) / step)
    last = start + step * (count - 1)  # stop is excluded, as in Python's range
    if count == 1:
        raise UserError(f"'{text}': range holds one value ({start}); set it plainly: key={start}")
    if all(isinstance(v, int) for v in (start, stop, step)):
        return IntDistribution(int(start), int(last), step=int(step))
    return FloatDistribution(float(start), float(round(last, 12)), step=float(step))


def _choice(text: str, sweep) -> Any:
    from optuna.distributions import CategoricalDistribution

    values = list(sweep.list)
    if len(values) < 2:
        raise UserError(f"'{text}': a choice needs two values or more, e.g. choice(a, b)")
    if any(not isinstance(v, str | int | float | bool) or v is None for v in values):
        raise UserError(f"'{text}': choices must be plain values (text or numbers), not lists or dicts")
    if len(set(map(repr, values))) != len(values):
        raise UserError(f"'{text}': a choice lists the same value twice")
    return CategoricalDistribution(values)


def parse_space(overrides: list[str]) -> SearchSpace:
    """The search space of a ``search=optuna`` sweep; raises UserError (one line) on bad input."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    space = SearchSpace(fixed=[])
    for text, override in zip(overrides, (_parse([o])[0] for o in overrides), strict=True):
        if not override.is_sweep_override():
            space.fixed.append(text)
            continue
        key = override.get_key_element().lstrip("+~")
        if override.is_delete():
            raise UserError(f"'{text}': a deletion cannot be searched; search a value instead")
        value = override.value()
        if key in space.distributions:
            raise UserError(f"'{text}': {key} is searched twice; give it one search expression")
        if isinstance(value, IntervalSweep):
            space.distributions[key] = _interval(text, value)
        elif isinstance(value, RangeSweep):
            space.distributions[key] = _range(text, value)
        elif isinstance(value, ChoiceSweep):
            space.distributions[key] = _choice(text, value)
        else:
            raise UserError(f"'{text}' is not a search expression orchestra reads; write interval(a, b), "
                            f"tag(log, interval(a, b)), range(a, b, step), choice(a, b) or a,b")
        space.text[key] = text.split("=", 1)[1]
        if override.is_add() or override.is_force_add():
            space.added.add(key)
    if not space.distributions:
        raise UserError("search=optuna needs at least one search expression, e.g. 'optim.lr=tag(log, interval(1e-4,"
                        " 1e-1))' or 'optim.name=choice(adamw, sgd)'")
    return space


def grid_values(key: str, distribution: Any, text: str) -> list[Any]:
    """Every value of a discrete distribution, for the grid sampler."""
    from optuna.distributions import CategoricalDistribution

    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    step = getattr(distribution, "step", None)
    if step is None:
        raise UserError(f"search.sampler=grid cannot enumerate '{key}={text}' (a continuous interval); use "
                        f"choice(...) or range(start, stop, step), or search.sampler=tpe")
    count = int(round((distribution.high - distribution.low) / step)) + 1
    values = [distribution.low + i * step for i in range(count)]
    return values if isinstance(distribution.low, int) else [round(v, 12) for v in values]


_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-/]*$")


def override_text(key: str, value: Any, added: bool = False) -> str:
    """``key=value`` in Hydra's grammar for a value the study chose (float repr keeps every digit)."""
    prefix = "+" if added else ""
    if isinstance(value, bool):
        shown = "true" if value else "false"
    elif isinstance(value, int | float):
        shown = repr(value)
    elif _PLAIN.match(str(value)) and str(value).lower() not in ("true", "false", "null"):
        shown = str(value)
    else:
        shown = "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
    return f"{prefix}{key}={shown}"


def first_point(space: SearchSpace) -> dict[str, Any]:
    """A value per parameter (low end or first choice): composing it checks the keys and the fixed overrides."""
    from optuna.distributions import CategoricalDistribution

    return {key: d.choices[0] if isinstance(d, CategoricalDistribution) else d.low
            for key, d in space.distributions.items()}


def space_text(space: SearchSpace) -> str:
    return json.dumps(space.text)
