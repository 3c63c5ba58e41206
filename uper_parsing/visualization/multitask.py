"""A unified perceptual parser's outputs and labels as pictures see them: per-task class tables,
part maps, and the scene / texture lines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .classes import ClassTable

__all__ = ["part_label_map", "prediction_notes", "task_classes", "truth_notes", "visible_parts"]

_NO_PART = -1  # what a pixel without a (real) part is drawn as: unlabelled


def task_classes(metadata: Any, task: str) -> ClassTable:
    """The class table of the ``object`` / ``part`` / ``material`` map; parts are drawn from
    :func:`visible_parts`, so their unlabelled value is -1."""
    ignore = _NO_PART if task == "part" else None
    return ClassTable.from_metadata(metadata, task, ignore_label=ignore)


def part_label_map(
    object_labels: np.ndarray, part_scores: torch.Tensor | np.ndarray, object_parts: list[list[int]]
) -> np.ndarray:
    """(H, W) int64 global part ids: at each pixel, the argmax over the slice of ``part_scores``
    (P, H, W) of the object in ``object_labels`` (H, W); -1 where that object has no parts or
    its background part "-" (its first) wins, so "no part" is drawn as unlabelled."""
    scores = (
        part_scores.detach().cpu().float().numpy() if torch.is_tensor(part_scores) else part_scores
    )
    parts = np.full(object_labels.shape, _NO_PART, dtype=np.int64)
    for obj, ids in enumerate(object_parts):
        inside = object_labels == obj
        if len(ids) == 0 or not inside.any():
            continue
        local = np.asarray(scores)[list(ids)][:, inside].argmax(axis=0)
        parts[inside] = np.where(local == 0, _NO_PART, np.asarray(ids)[local])
    return parts


def visible_parts(parts: np.ndarray, metadata: Any) -> np.ndarray:
    """(H, W) int64 ground-truth global part ids with the unlabelled value and every object's
    background part "-" (the first of its ``object_parts``) made -1, as :func:`part_label_map`
    draws them."""
    hidden = [ids[0] for ids in metadata.object_parts if len(ids)]
    hidden.append(int(getattr(metadata, "ignore_label", 255)))
    parts = np.asarray(parts, dtype=np.int64)
    return np.where(np.isin(parts, hidden), _NO_PART, parts)


def _top1(scores: torch.Tensor | np.ndarray) -> tuple[int, float]:
    """(index, softmax probability) of the highest of (K,) scores."""
    values = torch.as_tensor(scores).detach().cpu().float().reshape(-1)
    probs = torch.softmax(values, dim=0)
    index = int(probs.argmax())
    return index, float(probs[index])


def _labels_task(dataset_dict: Mapping[str, Any] | None, task: str) -> bool:
    """Whether the dict gives the ground truth of an image-level ``task``."""
    return (
        dataset_dict is not None
        and task in dataset_dict
        and task in dataset_dict.get("tasks", (task,))
    )


def prediction_notes(
    outputs: Mapping[str, Any],
    metadata: Any,
    dataset_dict: Mapping[str, Any] | None,
    texture_crop: bool,
) -> list[str]:
    """The lines "scene: kitchen (87%)" (and texture, for texture crops), each followed by the
    ground truth of ``dataset_dict`` and whether the prediction is right, when it has one."""
    lines = []
    for task in ["scene"] + (["texture"] if texture_crop else []):
        if task not in outputs:
            continue
        classes = ClassTable.from_metadata(metadata, task)
        index, prob = _top1(outputs[task])
        line = f"{task}: {classes.name(index)} ({100 * prob:.0f}%)"
        if _labels_task(dataset_dict, task):
            truth = int(dataset_dict[task])
            mark = "right" if truth == index else "wrong"
            line += f"    ground truth: {classes.name(truth)} [{mark}]"
        lines.append(line)
    return lines or ["no scene / texture prediction"]


def truth_notes(dataset_dict: Mapping[str, Any], metadata: Any) -> list[str]:
    """The lines "scene: kitchen" / "texture: striped" for the image-level tasks the dict
    labels."""
    return [
        f"{task}: {ClassTable.from_metadata(metadata, task).name(int(dataset_dict[task]))}"
        for task in ("scene", "texture")
        if _labels_task(dataset_dict, task)
    ]
