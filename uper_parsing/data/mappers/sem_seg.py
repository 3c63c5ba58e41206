"""``SemSegDatasetMapper``: image + semantic label file -> augmented model input."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..readers import read_sem_seg
from .base import LabelMapsMapper
from .build import MAPPER_REGISTRY

__all__ = ["SemSegDatasetMapper"]


@MAPPER_REGISTRY.register(name="sem_seg")
class SemSegDatasetMapper(LabelMapsMapper):
    """Read an image (and, when training, its labels through ``read_sem_seg``) and augment both
    with one joint transform.

    Output dict (a deep copy of the input plus):
        ``image``: Tensor (3, H, W) uint8 in ``image_format``, after augmentation.
        ``sem_seg`` (training only): Tensor (H, W) uint8 train ids (ignore = metadata's).
        ``height`` / ``width``: the original image size (what results are returned at).
    """

    def read_labels(self, d: Mapping[str, Any], hw: tuple[int, int]) -> dict[str, np.ndarray]:
        if "sem_seg_file_name" not in d:
            raise KeyError(f"Dataset dict of {d.get('file_name')} has no 'sem_seg_file_name'")
        expected = hw if self.check_labels else None
        return {
            "sem_seg": read_sem_seg(d["sem_seg_file_name"], self.metadata, expected_hw=expected)
        }
