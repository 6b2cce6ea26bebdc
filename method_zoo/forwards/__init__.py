"""Forward functions ``forward(self, batch, stage) -> dict``, one method per file."""

from method_zoo.forwards.barlow_twins import barlow_twins_forward
from method_zoo.forwards.byol import byol_forward
from method_zoo.forwards.dino import dino_forward
from method_zoo.forwards.ijepa import ijepa_forward
from method_zoo.forwards.mae import mae_forward
from method_zoo.forwards.mocov2 import mocov2_forward
from method_zoo.forwards.mocov3 import mocov3_forward
from method_zoo.forwards.nnclr import nnclr_forward
from method_zoo.forwards.simclr import simclr_forward
from method_zoo.forwards.simsiam import simsiam_forward
from method_zoo.forwards.supervised import supervised_forward
from method_zoo.forwards.swav import swav_forward
from method_zoo.forwards.vicreg import vicreg_forward

__all__ = [
    "barlow_twins_forward",
    "byol_forward",
    "dino_forward",
    "ijepa_forward",
    "mae_forward",
    "mocov2_forward",
    "mocov3_forward",
    "nnclr_forward",
    "simclr_forward",
    "simsiam_forward",
    "supervised_forward",
    "swav_forward",
    "vicreg_forward",
]
