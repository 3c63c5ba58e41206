"""``MultiTaskDatasetMapper``: image + the label maps of its labelled tasks -> model input."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
from torchvision.transforms import v2

from ...config import configurable
from ..multitask_utils import read_multitask_label
from ..transforms import RandomCropCategoryArea
from .base import LabelMapsMapper
from .build import MAPPER_REGISTRY

__all__ = ["MultiTaskDatasetMapper"]


def _crop_on_objects(augmentations: v2.Transform | None) -> v2.Transform | None:
    """Make the category-area limit of the random crop look at the ``object`` map."""
    steps = augmentations.transforms if isinstance(augmentations, v2.Compose) else [augmentations]
    for step in steps:
        if isinstance(step, RandomCropCategoryArea):
            step.primary = "object"
    return augmentations


@MAPPER_REGISTRY.register(name="multitask")
class MultiTaskDatasetMapper(LabelMapsMapper):
    """Read an image and (when training) the object / part / material maps its dict is labelled
    for, through ``read_multitask_label``, and move them with one joint transform.

    Output dict (a deep copy of the input plus):
        ``image``: Tensor (3, H, W) uint8 in ``image_format``, after augmentation.
        ``object`` / ``part`` / ``material`` (training, labelled tasks only): Tensor (H, W) uint8
            (int32 when ignore_label exceeds 255)
        train ids (``part``: global part ids), ignore = metadata's ``ignore_label``.
        ``scene`` / ``texture`` (labelled tasks): int, from the dataset dict.
        ``tasks``, ``source``; ``height`` / ``width``: the original image size.

    Image-level samples (texture crops) go through the same resize / crop / flip; padding adds
    zero pixels only.
    """

    @configurable
    def __init__(self, is_train: bool = True, **kwargs: Any) -> None:
        """Arguments as :class:`LabelMapsMapper`; the random crop's category-area limit looks at
        the ``object`` map."""
        super().__init__(is_train, **kwargs)
        self.augmentations = _crop_on_objects(self.augmentations)

    def read_labels(self, d: Mapping[str, Any], hw: tuple[int, int]) -> dict[str, np.ndarray]:
        label_hw = tuple(d.get("label_hw", hw))
        expected = label_hw if self.check_labels else None
        labels: dict[str, np.ndarray] = {}
        for task in ("object", "part", "material"):
            if task not in d["tasks"]:
                continue
            key = f"{task}_file_name"
            if key not in d:
                raise KeyError(
                    f"Dataset dict of {d.get('file_name')} labels {task} but has no {key}"
                )
            labels[task] = read_multitask_label(
                d[key], self.metadata, task, expected, objects=labels.get("object")
            )
        if labels and next(iter(labels.values())).shape != hw:
            size = (hw[1], hw[0])
            labels = {
                k: cv2.resize(v.astype(np.int32), size, interpolation=cv2.INTER_NEAREST)
                for k, v in labels.items()
            }
        return labels
