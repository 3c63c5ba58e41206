"""Dataset mappers (dataset dict -> model input), registered in ``MAPPER_REGISTRY``."""

from .base import LabelMapsMapper
from .build import MAPPER_REGISTRY, build_mapper
from .multitask import MultiTaskDatasetMapper
from .sem_seg import SemSegDatasetMapper

__all__ = [
    "LabelMapsMapper",
    "MAPPER_REGISTRY",
    "MultiTaskDatasetMapper",
    "SemSegDatasetMapper",
    "build_mapper",
]
