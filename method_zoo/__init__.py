"""method_zoo: SSL forward functions, their losses and heads, the EMA teacher wrapper, the feature queue and gathers.

Depends on torch only; it knows nothing of Lightning, Hydra or SLURM.
"""

from method_zoo.errors import MethodError
from method_zoo.forwards import (
    barlow_twins_forward,
    byol_forward,
    dino_forward,
    ijepa_forward,
    mae_forward,
    mocov2_forward,
    mocov3_forward,
    nnclr_forward,
    simclr_forward,
    simsiam_forward,
    supervised_forward,
    swav_forward,
    vicreg_forward,
)
from method_zoo.losses import (
    BarlowTwinsLoss,
    BYOLLoss,
    DINOLoss,
    IJEPALoss,
    InfoNCELoss,
    MAELoss,
    NTXEntLoss,
    SimSiamLoss,
    SwAVLoss,
    VICRegLoss,
    sinkhorn_knopp,
)
from method_zoo.queue import FeatureQueue
from method_zoo.requirements import require_attributes
from method_zoo.teacher_student import TeacherStudentWrapper
from method_zoo.views import split_views

__all__ = [
    "BYOLLoss",
    "BarlowTwinsLoss",
    "DINOLoss",
    "IJEPALoss",
    "InfoNCELoss",
    "MAELoss",
    "SimSiamLoss",
    "SwAVLoss",
    "dino_forward",
    "ijepa_forward",
    "mae_forward",
    "mocov2_forward",
    "mocov3_forward",
    "simsiam_forward",
    "sinkhorn_knopp",
    "swav_forward",
    "FeatureQueue",
    "MethodError",
    "NTXEntLoss",
    "TeacherStudentWrapper",
    "VICRegLoss",
    "barlow_twins_forward",
    "byol_forward",
    "nnclr_forward",
    "require_attributes",
    "simclr_forward",
    "split_views",
    "supervised_forward",
    "vicreg_forward",
]
