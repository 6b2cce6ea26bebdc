"""Sweeps on disk: creating one, and status / resume / cancel over its manifest, scheduler and results."""
