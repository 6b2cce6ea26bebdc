"""Small, torch-free readings of config values shared by the validation modules."""

from __future__ import annotations

import math
from typing import Any

MISSING = "???"  # OmegaConf's mark for a mandatory value nobody set


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def real(value: Any) -> float | None:
    """The value as a finite float; None for anything else (strings, bools, nan, inf)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
