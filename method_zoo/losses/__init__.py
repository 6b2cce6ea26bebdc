"""Loss functions, one per file; each computes its statistics over the global (all-rank) batch."""

from method_zoo.losses.barlow import BarlowTwinsLoss
from method_zoo.losses.byol import BYOLLoss
from method_zoo.losses.ntxent import NTXEntLoss
from method_zoo.losses.vicreg import VICRegLoss

__all__ = ["BYOLLoss", "BarlowTwinsLoss", "NTXEntLoss", "VICRegLoss"]
