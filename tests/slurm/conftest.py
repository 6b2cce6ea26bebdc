"""The real single-node SLURM cluster for tests/slurm: started once per session in a fresh state dir, always
stopped. When it cannot start (packages missing, not root) every test here is skipped LOUDLY — a banner on the
terminal and in the summary — never passed silently."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from launch.cluster import ClusterError, DevCluster

_SKIP_REASONS: list[str] = []
_BANNER = "!" * 100


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slurm: needs the real single-node development SLURM cluster (launch/cluster)")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    for reason in _SKIP_REASONS:
        terminalreporter.write_line(_BANNER, red=True, bold=True)
        terminalreporter.write_line(f"SLURM TESTS SKIPPED: {reason}", red=True, bold=True)
        terminalreporter.write_line("install with: bash launch/cluster/install.sh (as root)", red=True, bold=True)
        terminalreporter.write_line(_BANNER, red=True, bold=True)


def _loud_skip(config: pytest.Config, reason: str) -> None:
    _SKIP_REASONS.append(reason)
    capture = config.pluginmanager.getplugin("capturemanager")
    message = f"\n{_BANNER}\nSLURM TESTS SKIPPED: {reason}\n{_BANNER}\n"
    if capture is not None:
        with capture.global_and_fixture_disabled():  # reach the real terminal even under output capture
            sys.stderr.write(message)
    else:
        sys.stderr.write(message)
    pytest.skip(f"SLURM TESTS SKIPPED: {reason}")


@pytest.fixture(scope="session")
def slurm_cluster(pytestconfig: pytest.Config) -> Iterator[DevCluster]:
    # A fresh, short directory straight under /tmp: munged's and MariaDB's socket paths must stay < ~100 chars,
    # which pytest's own tmp_path does not promise.
    state_dir = Path(tempfile.mkdtemp(prefix="osl-", dir="/tmp"))
    cluster = DevCluster(state_dir)
    started = time.monotonic()
    try:
        cluster.up(timeout=120)
    except ClusterError as error:
        cluster.down()
        if (state_dir / "log").is_dir():  # a daemon got far enough to log: keep it for whoever reads the reason
            _loud_skip(pytestconfig, f"{error} (logs kept in {state_dir})")
        shutil.rmtree(state_dir, ignore_errors=True)
        _loud_skip(pytestconfig, str(error))
    sys.stderr.write(f"\nslurm dev cluster up in {time.monotonic() - started:.1f}s at {state_dir}\n")
    previous = os.environ.get("SLURM_CONF")
    os.environ.update(cluster.env())
    try:
        yield cluster
    finally:
        stopping = time.monotonic()
        cluster.down()
        sys.stderr.write(f"\nslurm dev cluster down in {time.monotonic() - stopping:.1f}s\n")
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
        shutil.rmtree(state_dir, ignore_errors=True)
