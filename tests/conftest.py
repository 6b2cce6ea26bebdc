"""Every test run gets its own orchestra cache (the no-training floors), so runs never read a user's cached floors
or leave entries in their home directory; subprocesses and SLURM members inherit it through the environment."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_CACHE: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    _CACHE.append(tempfile.mkdtemp(prefix="orchestra-test-cache-"))
    os.environ["ORCHESTRA_CACHE_DIR"] = _CACHE[0]


def pytest_unconfigure(config: pytest.Config) -> None:
    for path in _CACHE:
        shutil.rmtree(path, ignore_errors=True)
