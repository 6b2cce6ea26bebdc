"""Up-front checks that turn AttributeError/KeyError deep inside a forward into an actionable message."""

from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from method_zoo.errors import MethodError


def require_attributes(module: nn.Module, names: Iterable[str], method: str) -> None:
    """Raise MethodError for the first attribute in ``names`` that ``module`` lacks (or holds as None)."""
    for name in names:
        if getattr(module, name, None) is None:
            raise MethodError(
                f"{method} needs Module attribute '{name}' (pass {name}=... to orchestra.Module)"
            )


def require_batch_keys(batch: Mapping[str, Any], keys: Iterable[str], method: str, stage: str) -> None:
    """Raise MethodError for the first key in ``keys`` missing from the batch dict."""
    for key in keys:
        if key not in batch:
            present = ", ".join(sorted(map(str, batch))) or "none"
            raise MethodError(
                f"{method} needs batch['{key}'] at stage '{stage}' but the batch has keys: {present}"
            )
