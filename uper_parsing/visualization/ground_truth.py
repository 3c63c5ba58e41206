"""The ground truth of a dataset dict, as label maps to draw, through the project's label readers.

A dict is either raw (label file names, as a dataset's loader returns it) or holds its labels
(a training mapper's output: label tensors at the augmented image's size; or ``sem_seg`` /
``pan_seg`` arrays); labels held win over files, since they match the image they come with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..data.multitask_utils import MAP_TASKS, read_multitask_label
from ..data.panoptic_utils import read_panoptic
from ..data.readers import read_sem_seg
from .panoptic import segments_from_instances
from .regions import as_label_map, resize_labels

__all__ = ["dict_family", "holds_truth", "multitask_truth", "panoptic_truth", "sem_seg_truth"]

# The keys that hold each family's ground truth, raw or mapped, in the order families are tried:
# panoptic dicts may also hold a semantic map, multi-task ones none of the others.
_FAMILY_KEYS = {
    "panoptic": ("instances", "pan_seg", "pan_seg_file_name"),
    "multitask": ("tasks",),
    "sem_seg": ("sem_seg", "sem_seg_file_name"),
}


def holds_truth(dataset_dict: Mapping[str, Any], family: str) -> bool:
    """Whether the dict holds ground truth of ``family`` ("panoptic", "multitask", "sem_seg")."""
    return any(key in dataset_dict for key in _FAMILY_KEYS[family])


def dict_family(dataset_dict: Mapping[str, Any]) -> str:
    """The first family whose ground truth the dict holds.

    Raises:
        KeyError: none (naming the image and the keys looked for).
    """
    for family in _FAMILY_KEYS:
        if holds_truth(dataset_dict, family):
            return family
    raise KeyError(
        f"Dataset dict of {dataset_dict.get('file_name')} has no ground truth to draw: expected "
        f"one of {_FAMILY_KEYS}; it has {sorted(dataset_dict)}"
    )


def sem_seg_truth(
    dataset_dict: Mapping[str, Any], metadata: Any, hw: tuple[int, int]
) -> np.ndarray:
    """(H, W) int64 train ids of the image of size ``hw``: the mapped ``sem_seg`` tensor, else
    ``read_sem_seg(sem_seg_file_name)``, which checks the size and the values."""
    if "sem_seg" in dataset_dict:
        return as_label_map(dataset_dict["sem_seg"])
    return read_sem_seg(dataset_dict["sem_seg_file_name"], metadata, expected_hw=hw).astype(
        np.int64
    )


def panoptic_truth(dataset_dict: Mapping[str, Any], metadata: Any) -> tuple[np.ndarray, list[dict]]:
    """(segment ids (H, W) int64, segments_info): from the mapped ``sem_seg`` + ``instances``,
    else the ``pan_seg`` ids the dict holds, else ``read_panoptic`` of its PNG (checked against
    its ``segments_info``)."""
    if "instances" in dataset_dict:
        ignore = int(getattr(metadata, "ignore_label", 255))
        return segments_from_instances(
            dataset_dict["sem_seg"], dataset_dict["instances"], ignore_label=ignore
        )
    if "pan_seg" in dataset_dict:
        return as_label_map(dataset_dict["pan_seg"]), list(dataset_dict["segments_info"])
    return read_panoptic(dataset_dict), list(dataset_dict["segments_info"])


def multitask_truth(
    dataset_dict: Mapping[str, Any], metadata: Any, hw: tuple[int, int]
) -> dict[str, np.ndarray]:
    """{task: (H, W) int64 train ids} of the object / part / material maps the dict labels, at
    ``hw``: mapped tensors, else ``read_multitask_label`` of its label files (parts resolved by
    the object map; labels stored at another size than the image resized, nearest)."""
    tasks = [t for t in MAP_TASKS if t in dataset_dict.get("tasks", ())]
    if any(isinstance(dataset_dict.get(t), torch.Tensor) for t in tasks):
        return {t: as_label_map(dataset_dict[t]) for t in tasks if t in dataset_dict}
    expected = tuple(dataset_dict.get("label_hw", hw))
    labels: dict[str, np.ndarray] = {}
    for task in tasks:
        key = f"{task}_file_name"
        if key not in dataset_dict:
            image = dataset_dict.get("file_name")
            raise KeyError(f"Dataset dict of {image} labels {task} but has no {key}")
        labels[task] = read_multitask_label(
            dataset_dict[key], metadata, task, expected, objects=labels.get("object")
        )
    return {task: resize_labels(values, hw) for task, values in labels.items()}
