"""Shared helpers for method_zoo tests: a stand-in for orchestra.Module that binds a forward function."""

from collections.abc import Callable
from typing import Any

import pytest
from torch import nn


class BoundModule(nn.Module):
    """Minimal stand-in for orchestra.Module: keyword arguments become attributes, forward is bound."""

    def __init__(self, forward: Callable[..., dict[str, Any]], **attributes: Any) -> None:
        super().__init__()
        for name, value in attributes.items():
            setattr(self, name, value)
        self._method = forward

    def forward(self, batch: dict[str, Any], stage: str) -> dict[str, Any]:
        return self._method(self, batch, stage)


@pytest.fixture
def make_module() -> Callable[..., BoundModule]:
    return BoundModule
