"""Loss functions, one per file; each computes its statistics over the global (all-rank) batch."""

from method_zoo.losses.barlow import BarlowTwinsLoss
from method_zoo.losses.byol import BYOLLoss
from method_zoo.losses.dino import DINOLoss
from method_zoo.losses.ijepa import IJEPALoss
from method_zoo.losses.infonce import InfoNCELoss
from method_zoo.losses.mae import MAELoss
from method_zoo.losses.ntxent import NTXEntLoss
from method_zoo.losses.simsiam import SimSiamLoss
from method_zoo.losses.sinkhorn import sinkhorn_knopp
from method_zoo.losses.swav import SwAVLoss
from method_zoo.losses.vicreg import VICRegLoss

__all__ = ["BYOLLoss", "BarlowTwinsLoss", "DINOLoss", "IJEPALoss", "InfoNCELoss", "MAELoss", "NTXEntLoss",
           "SimSiamLoss", "SwAVLoss", "VICRegLoss", "sinkhorn_knopp"]
