"""orchestra: SSL pretraining sweeps — plain forward functions in a Lightning Module, launched by Hydra.

Heavy imports (torch, Lightning) happen only when ``Module`` is first used, so the CLI's quick commands stay quick.
"""

from typing import Any

__all__ = ["Module"]


def __getattr__(name: str) -> Any:
    if name == "Module":
        from orchestra.model.module import Module

        return Module
    raise AttributeError(f"module 'orchestra' has no attribute '{name}'")
