from .build import META_ARCH_REGISTRY, build_model
from .semantic_seg import SemanticSegmentor
from .unified_parser import UnifiedPerceptualParser

__all__ = ["META_ARCH_REGISTRY", "build_model", "SemanticSegmentor", "UnifiedPerceptualParser"]
