"""``MultiTaskDatasetMapper``: image + the label maps of its labelled tasks -> model input."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from ...config import configurable
from ..catalog import MetadataCatalog
from ..detection_utils import check_image_size, read_image
from ..multitask_utils import read_multitask_label
from ..transforms import RandomCropCategoryArea, apply_transforms, build_augmentation
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
class MultiTaskDatasetMapper:
    """Read an image and (when training) the object / part / material maps its dict is labelled
    for, through ``read_multitask_label``, and move them with one joint transform.

    Output dict (a deep copy of the input plus):
        ``image``: Tensor (3, H, W) uint8 in ``image_format``, after augmentation.
        ``object`` / ``part`` / ``material`` (training, labelled tasks only): Tensor (H, W) int64
        train ids (``part``: global part ids), ignore = metadata's ``ignore_label``.
        ``scene`` / ``texture`` (labelled tasks): int, from the dataset dict.
        ``tasks``, ``source``; ``height`` / ``width``: the original image size.

    Image-level samples (texture crops) go through the same resize / crop / flip; padding adds
    zero pixels only.
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: v2.Transform | Sequence[v2.Transform] | None,
        image_format: str = "RGB",
        metadata: Any = None,
        check_labels: bool = True,
    ) -> None:
        """
        Args:
            is_train: read and transform label maps (True) or only the image (False).
            augmentations: joint transform (or list of them) over image + label maps; its
                ``RandomCropCategoryArea`` limits the largest category of the ``object`` map.
            image_format: "RGB" or "BGR" channel order of ``image``.
            metadata: the dataset's multi-task metadata; needed when ``is_train``.
            check_labels: check image and label sizes against the dataset dict.
        """
        if is_train and metadata is None:
            raise ValueError("A training MultiTaskDatasetMapper needs the dataset's metadata")
        if isinstance(augmentations, Sequence):
            augmentations = v2.Compose(list(augmentations))
        self.is_train = is_train
        self.augmentations = _crop_on_objects(augmentations)
        self.image_format = image_format
        self.metadata = metadata
        self.check_labels = check_labels

    @classmethod
    def from_config(cls, cfg: Any, is_train: bool = True) -> dict[str, Any]:
        names = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
        metadata = MetadataCatalog.get(names[0]) if len(names) else None
        ignore = metadata.get("ignore_label", 255) if metadata is not None else 255
        return {
            "is_train": is_train,
            "augmentations": build_augmentation(cfg, is_train, ignore_label=ignore),
            "image_format": cfg.INPUT.FORMAT,
            "metadata": metadata,
            "check_labels": cfg.DATALOADER.CHECK_LABELS,
        }

    def _read_labels(self, d: Mapping[str, Any], hw: tuple[int, int]) -> dict[str, np.ndarray]:
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

    def __call__(self, dataset_dict: Mapping[str, Any]) -> dict[str, Any]:
        """Map one multi-task dataset dict (``file_name``, ``tasks``, ``<task>_file_name`` ...)."""
        d = copy.deepcopy(dict(dataset_dict))
        image = read_image(d["file_name"], format=self.image_format)
        if self.check_labels:
            check_image_size(d, image)
        hw = (int(image.shape[0]), int(image.shape[1]))
        tensor = tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))
        labels = {}
        if self.is_train:
            labels = {
                k: tv_tensors.Mask(torch.from_numpy(v.astype(np.int64)))
                for k, v in self._read_labels(d, hw).items()
            }
        tensor, labels = apply_transforms(self.augmentations, tensor, labels)
        d["image"] = tensor.as_subclass(torch.Tensor).contiguous()
        for task, mask in labels.items():
            d[task] = mask.as_subclass(torch.Tensor).long()
        d["height"], d["width"] = hw
        d.setdefault("image_id", os.path.splitext(os.path.basename(d["file_name"]))[0])
        return d

    def __repr__(self) -> str:
        mode = "train" if self.is_train else "test"
        return f"MultiTaskDatasetMapper({mode}, format={self.image_format}, {self.augmentations})"
