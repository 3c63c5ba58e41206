"""Dataset mappers (dataset dict -> model input), registered in ``MAPPER_REGISTRY``."""

from .base import LabelMapsMapper
from .build import MAPPER_REGISTRY, build_mapper
from .multitask import MultiTaskDatasetMapper
from .panoptic import PanopticDatasetMapper
from .sem_seg import SemSegDatasetMapper

__all__ = [
    "LabelMapsMapper",
    "MAPPER_REGISTRY",
    "MultiTaskDatasetMapper",
    "PanopticDatasetMapper",
    "SemSegDatasetMapper",
    "build_mapper",
]
