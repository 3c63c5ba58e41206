"""``PanopticDatasetMapper``: image + panoptic PNG -> Panoptic FPN model input."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..panoptic_utils import (
    check_segments_info,
    panoptic_instances,
    read_panoptic,
    read_panoptic_semantic,
    segment_index_map,
)
from .base import LabelMapsMapper
from .build import MAPPER_REGISTRY

__all__ = ["PanopticDatasetMapper", "SEGMENT_INDEX_OFFSET"]

SEGMENT_INDEX_OFFSET = 256
"""Segment ``k`` of ``segments_info`` is ``k + 256`` in the transformed index map; void is 0 and
padding is the ignore label (< 256), so no segment can be confused with either, whatever the
number of segments (the map is int64)."""

_INDEX_KEY = "_panoptic_segment_index"


@MAPPER_REGISTRY.register(name="panoptic")
class PanopticDatasetMapper(LabelMapsMapper):
    """Read an image and, when training, its panoptic labels through ``data.panoptic_utils``, and
    move image, semantic map and instances with one joint transform.

    The segment ids are turned into a dense index map (segment ``k`` -> ``k + 256``, void 0) that
    moves with ``sem_seg`` as a second label map (nearest resize; padding writes the ignore label,
    which is no segment). Instances are then cut from the transformed index map, so a segment that
    left the crop vanishes and every box is the tight box of its transformed mask.

    Output dict (a deep copy of the input plus):
        ``image``: Tensor (3, H, W) uint8 in ``image_format``, after augmentation.
        ``sem_seg`` (training): Tensor (H, W) uint8; 0 = thing, ``1 + s`` = stuff ``s``,
        ``ignore_label`` = void / padding.
        ``instances`` (training): dict ``boxes`` Tensor (N, 4) float32 XYXY, ``labels`` (N,)
        int64 thing ids, ``masks`` (N, H, W) uint8; non-crowd things still in the image (N >= 0).
        ``height`` / ``width``: the original image size (what results are returned at).
    """

    def label_dtype(self, name: str) -> torch.dtype:
        """int64 for the segment index map (offset ids), as the base class for ``sem_seg``."""
        return torch.int64 if name == _INDEX_KEY else super().label_dtype(name)

    def read_labels(self, d: Mapping[str, Any], hw: tuple[int, int]) -> dict[str, np.ndarray]:
        """``sem_seg`` (H, W) uint8 and the segment index map (H, W) int64 of one dict."""
        ids = read_panoptic(d)
        if self.check_labels and ids.shape != hw:
            raise ValueError(
                f"Panoptic PNG {d['pan_seg_file_name']} has size (H, W) = {ids.shape} but its "
                f"image {d.get('file_name')} has size {hw}"
            )
        check_segments_info(d, self.metadata)
        sem = read_panoptic_semantic(d, self.metadata, ids=ids)
        index = segment_index_map(ids, d["segments_info"], offset=SEGMENT_INDEX_OFFSET)
        return {"sem_seg": sem, _INDEX_KEY: index}

    def __call__(self, dataset_dict: Mapping[str, Any]) -> dict[str, Any]:
        """Map one panoptic dataset dict to a model input (see the class docstring)."""
        out = super().__call__(dataset_dict)
        if not self.is_train:
            return out
        index = out.pop(_INDEX_KEY).numpy()
        segments = out["segments_info"]
        seg_ids = np.array([int(s["id"]) for s in segments] + [0], dtype=np.int64)
        k = index - SEGMENT_INDEX_OFFSET
        k[(k < 0) | (k >= len(segments))] = len(segments)  # void and padding -> id 0
        targets = panoptic_instances(seg_ids[k], segments)
        out["instances"] = {name: torch.from_numpy(v) for name, v in targets.items()}
        return out
