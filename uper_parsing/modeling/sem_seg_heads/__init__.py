from .base import SemSegHead
from .build import SEM_SEG_HEADS_REGISTRY, build_aux_head, build_sem_seg_head
from .fcn_head import FCNHead
from .fpn_head import SemSegFPNHead
from .losses import sem_seg_cross_entropy
from .ppm import PPM, PrRoIPool2d
from .psp_head import PSPHead
from .uper_head import UPerNetHead

__all__ = [
    "SEM_SEG_HEADS_REGISTRY",
    "build_sem_seg_head",
    "build_aux_head",
    "SemSegHead",
    "SemSegFPNHead",
    "PSPHead",
    "UPerNetHead",
    "FCNHead",
    "PPM",
    "PrRoIPool2d",
    "sem_seg_cross_entropy",
]
