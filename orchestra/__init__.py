"""orchestra: SSL pretraining sweeps — plain forward functions in a Lightning Module, launched by Hydra.

The public API is the names below. Heavy imports (torch, Lightning) happen only when one of them is first used,
so the CLI's quick commands (status, report, cancel, --help) never load torch.
"""

from importlib import import_module
from typing import Any

# public name -> the module that defines it
_PUBLIC = {
    "Module": "orchestra.model.module",
    "OnlineProbe": "orchestra.callbacks.probe",
    "OnlineKNN": "orchestra.callbacks.knn",
    "OnlineQueue": "orchestra.callbacks.queue",
    "SmallCNN": "orchestra.model.backbones",
    "from_torchvision": "orchestra.model.backbones",
    "from_timm": "orchestra.model.backbones",
    "VisionTransformer": "orchestra.model.vit",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'orchestra' has no attribute '{name}'")
