from .build import META_ARCH_REGISTRY, build_model, prepare_for_inference
from .panoptic_fpn import PanopticFPN
from .semantic_seg import SemanticSegmentor
from .unified_parser import UnifiedPerceptualParser

__all__ = [
    "META_ARCH_REGISTRY",
    "build_model",
    "prepare_for_inference",
    "PanopticFPN",
    "SemanticSegmentor",
    "UnifiedPerceptualParser",
]
