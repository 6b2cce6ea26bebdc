"""Forward functions ``forward(self, batch, stage) -> dict``, one method per file."""

from method_zoo.forwards.barlow_twins import barlow_twins_forward
from method_zoo.forwards.byol import byol_forward
from method_zoo.forwards.nnclr import nnclr_forward
from method_zoo.forwards.simclr import simclr_forward
from method_zoo.forwards.supervised import supervised_forward
from method_zoo.forwards.vicreg import vicreg_forward

__all__ = [
    "barlow_twins_forward",
    "byol_forward",
    "nnclr_forward",
    "simclr_forward",
    "supervised_forward",
    "vicreg_forward",
]
