"""The metadata of the datasets that published checkpoints were trained on, which
``tools/convert_weights.py`` writes into the files it converts, so that a converted model runs and
draws without its dataset: detectron2's Panoptic FPN models -> COCO panoptic (80 things, 53
stuff), mmseg's, transformers' and CSAIL's semantic models -> ADE20K (150 classes). CSAIL's unified
parser already carries its Broden+ lists (``Conversion.metadata``).

A model is matched by its class counts (the classifier rows of the converted state dict), so a
checkpoint trained on another dataset (Cityscapes ...) gets no metadata rather than a wrong one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from .conversion import Conversion

__all__ = ["ade20k_metadata", "coco_panoptic_metadata", "published_metadata"]

_SEM_SEG_CLASSIFIER = "sem_seg_head.predictor.weight"
_BOX_CLASSIFIER = "roi_heads.box_predictor.cls_score.weight"  # things + background rows


def ade20k_metadata() -> dict[str, Any]:
    """ADE20K SceneParsing's 150 classes, as the builtin ``ade20k_sem_seg_*`` metadata."""
    from ..data.datasets.ade20k_categories import ADE20K_SEM_SEG_CLASSES, ADE20K_SEM_SEG_COLORS

    return {
        "stuff_classes": list(ADE20K_SEM_SEG_CLASSES),
        "stuff_colors": [list(c) for c in ADE20K_SEM_SEG_COLORS],
        "ignore_label": 255,
        "evaluator_type": "sem_seg",
    }


def coco_panoptic_metadata() -> dict[str, Any]:
    """COCO 2017 panoptic's 133 categories, as the builtin ``coco_2017_*_panoptic`` metadata
    (thing / stuff classes and colours, contiguous id maps)."""
    from ..data.datasets.coco_panoptic import panoptic_metadata
    from ..data.datasets.coco_panoptic_categories import COCO_PANOPTIC_CATEGORIES

    meta = panoptic_metadata(COCO_PANOPTIC_CATEGORIES, where="COCO panoptic")
    meta.pop("categories")
    return {**meta, "ignore_label": 255, "evaluator_type": "coco_panoptic_seg"}


def _rows(state: Mapping[str, torch.Tensor], key: str) -> int | None:
    return int(state[key].shape[0]) if key in state else None


def _ade20k_if_150(state: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    return ade20k_metadata() if _rows(state, _SEM_SEG_CLASSIFIER) == 150 else None


def _coco_if_133(state: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    counts = (_rows(state, _BOX_CLASSIFIER), _rows(state, _SEM_SEG_CLASSIFIER))
    return coco_panoptic_metadata() if counts == (81, 54) else None


# Conversion.source_format -> the metadata of that codebase's published models, by class count
_BY_SOURCE: dict[str, Callable[[Mapping[str, torch.Tensor]], dict[str, Any] | None]] = {
    "detectron2": _coco_if_133,
    "mmseg": _ade20k_if_150,
    "hf-upernet": _ade20k_if_150,
    "csail": _ade20k_if_150,
}


def published_metadata(conversion: Conversion) -> dict[str, Any] | None:
    """The metadata to store with a converted whole model: the converter's own
    (``conversion.metadata``), else that of the dataset its codebase's published models of
    this class count were trained on; None for backbones and unknown counts."""
    if conversion.metadata is not None:
        return conversion.metadata
    if conversion.kind != "model" or conversion.source_format not in _BY_SOURCE:
        return None
    return _BY_SOURCE[conversion.source_format](conversion.state_dict)
