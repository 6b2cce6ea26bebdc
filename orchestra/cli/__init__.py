"""The ``orchestra`` command line: a dispatch table (``main``) and one module per command."""

from orchestra.cli.main import main

__all__ = ["main"]
