from .build import META_ARCH_REGISTRY, build_model
from .panoptic_fpn import PanopticFPN
from .semantic_seg import SemanticSegmentor
from .unified_parser import UnifiedPerceptualParser

__all__ = [
    "META_ARCH_REGISTRY",
    "build_model",
    "PanopticFPN",
    "SemanticSegmentor",
    "UnifiedPerceptualParser",
]
