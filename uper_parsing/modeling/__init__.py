"""Models. Importing this package registers every backbone, head and meta-architecture."""

from ..layers import ShapeSpec
from .backbone import BACKBONE_REGISTRY, FPN, Backbone, ResNet, build_backbone
from .inference import InferenceSettings, run_inference
from .meta_arch import (
    META_ARCH_REGISTRY,
    SemanticSegmentor,
    UnifiedPerceptualParser,
    build_model,
    prepare_for_inference,
)
from .postprocessing import sem_seg_postprocess
from .sem_seg_heads import (
    SEM_SEG_HEADS_REGISTRY,
    FCNHead,
    PSPHead,
    SemSegFPNHead,
    UPerNetHead,
    build_aux_head,
    build_sem_seg_head,
)

__all__ = [
    "ShapeSpec",
    "Backbone",
    "ResNet",
    "FPN",
    "BACKBONE_REGISTRY",
    "build_backbone",
    "SEM_SEG_HEADS_REGISTRY",
    "build_sem_seg_head",
    "build_aux_head",
    "SemSegFPNHead",
    "PSPHead",
    "UPerNetHead",
    "FCNHead",
    "META_ARCH_REGISTRY",
    "build_model",
    "prepare_for_inference",
    "SemanticSegmentor",
    "UnifiedPerceptualParser",
    "InferenceSettings",
    "run_inference",
    "sem_seg_postprocess",
]
