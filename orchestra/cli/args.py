"""What the command modules share: splitting arguments, hiding secrets from ``sys.argv``, the end-of-sweep report."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def split(args: list[str]) -> tuple[set[str], list[str]]:
    """(flags, positionals): flags start with '-', everything else is an override or a path."""
    return {a for a in args if a.startswith("-")}, [a for a in args if not a.startswith("-")]


@contextmanager
def redacted_argv(overrides: list[str]) -> Iterator[None]:
    """``sys.argv`` with the values of secret-looking overrides replaced, for as long as the block runs.

    wandb records ``sys.argv`` in its run metadata; our own parsing uses ``overrides``. Only the entries of
    ``sys.argv`` that are one of these overrides are touched, so an in-process call (a test, a notebook) leaves the
    host program's arguments alone, and the original list is back afterwards.
    """
    from orchestra.config.compose import redact_overrides

    hidden = {o: r for o, r in zip(overrides, redact_overrides(overrides), strict=True) if o != r}
    saved = list(sys.argv)
    sys.argv[:] = [hidden.get(a, a) for a in saved]
    try:
        yield
    finally:
        sys.argv[:] = saved


def report_at_end(sweep_dir: Path) -> None:
    """What a sweep command does once every member has ended: the comparison table and the report files."""
    from orchestra.reporting import print_report

    print_report(sweep_dir)
