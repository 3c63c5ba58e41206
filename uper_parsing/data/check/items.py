"""Checks of one dataset dict's files, per family: every problem reported, read through the
readers the mappers use, so that what passes here reads in training."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..multitask_utils import MAP_TASKS, decode_label_numbers, number_lookup, unknown_label_numbers
from ..panoptic_utils import (
    check_segments_info,
    read_panoptic_ids,
    read_panoptic_semantic,
    segment_id_mismatch,
)
from ..readers import (
    TruncatedImageError,
    format_label_values,
    invalid_label_values,
    label_mapping_name,
    read_image,
    read_label_values,
    valid_train_ids,
)
from .problem import Problem

__all__ = [
    "check_image",
    "check_images_only",
    "check_multitask_item",
    "check_panoptic_item",
    "check_sem_seg_item",
]


def check_image(d: Mapping[str, Any]) -> tuple[list[Problem], tuple[int, int] | None]:
    """Problems of the image of dataset dict ``d`` (missing, empty, truncated, undecodable, or
    of another size than its ``height`` / ``width``) and its size (H, W), None when unreadable."""
    path = os.fspath(d.get("file_name", ""))
    try:
        image = read_image(path, format="BGR")
    except FileNotFoundError:
        return [Problem(path, "file_name", "file not found", "an image file")], None
    except TruncatedImageError as err:
        return [Problem(path, "file_name", f"truncated ({err.reason})", "a complete image")], None
    except (OSError, ValueError) as err:
        return [Problem(path, "file_name", f"unreadable ({err})", "a decodable image")], None
    hw = (int(image.shape[0]), int(image.shape[1]))
    listed = (d.get("height", hw[0]), d.get("width", hw[1]))
    if hw != tuple(listed):
        expected = f"{tuple(listed)}, the dataset dict's height, width"
        return [Problem(path, "size", f"(H, W) = {hw}", expected)], hw
    return [], hw


def _read_problem(path: str, key: str, err: Exception, what: str) -> Problem:
    """The problem of a label file its reader rejected."""
    if isinstance(err, FileNotFoundError):
        return Problem(path, key, "file not found", what)
    return Problem(path, key, f"unreadable ({err})", what)


def _absent(d: Mapping[str, Any], key: str) -> Problem:
    return Problem(
        os.fspath(d.get("file_name", "?")), key, "absent from the dataset dict", "a path"
    )


def _size_problem(path: str, shape: tuple[int, ...], hw: tuple[int, int] | None) -> list[Problem]:
    if hw is None or tuple(shape) == tuple(hw):
        return []
    return [Problem(path, "size", f"(H, W) = {tuple(shape)}", f"{tuple(hw)}, its image's size")]


def check_sem_seg_item(d: Mapping[str, Any], metadata: Any) -> list[Problem]:
    """Image, and label file: readable, of the image's size, every value mapping to a class or
    the ignore label (``read_sem_seg``'s checks, each reported)."""
    problems, hw = check_image(d)
    if "sem_seg_file_name" not in d:
        return [*problems, _absent(d, "sem_seg_file_name")]
    path = os.fspath(d["sem_seg_file_name"])
    try:
        stored = read_label_values(path)
    except (OSError, ValueError) as err:
        return [*problems, _read_problem(path, "sem_seg_file_name", err, "a label PNG")]
    problems += _size_problem(path, stored.shape, hw)
    bad = invalid_label_values(stored, metadata)
    if bad:
        expected = f"train ids {valid_train_ids(metadata)}; {label_mapping_name(metadata)}"
        problems.append(Problem(path, "label values", f"[{format_label_values(bad)}]", expected))
    return problems


def check_panoptic_item(d: Mapping[str, Any], metadata: Any) -> list[Problem]:
    """Image; panoptic PNG readable, of the image's size, its ids and ``segments_info`` the same
    both ways, categories in range; the semantic map when the dict names one."""
    problems, hw = check_image(d)
    if "pan_seg_file_name" not in d:
        return [*problems, _absent(d, "pan_seg_file_name")]
    path = os.fspath(d["pan_seg_file_name"])
    try:
        ids = read_panoptic_ids(path)
    except (OSError, ValueError) as err:
        return [*problems, _read_problem(path, "pan_seg_file_name", err, "a panoptic PNG")]
    problems += _size_problem(path, ids.shape, hw)
    missing, unlisted = segment_id_mismatch(ids, d.get("segments_info", []))
    if missing:
        value = f"ids {missing} absent from the PNG"
        problems.append(Problem(path, "segments_info", value, "each listed segment in the PNG"))
    if unlisted:
        value = f"{unlisted} not in segments_info"
        expected = "each non-zero id of the PNG listed in the JSON"
        problems.append(Problem(path, "segment ids", value, expected))
    try:
        check_segments_info(d, metadata)
        if "sem_seg_file_name" in d:
            read_panoptic_semantic(d, metadata, ids=ids)
    except (OSError, ValueError) as err:
        problems.append(Problem(path, "semantic labels", f"{err}", "values within the classes"))
    return problems


def _layers(cell: Any) -> list[str]:
    """The label files of a Broden cell: one path or a list of layers."""
    if isinstance(cell, str | os.PathLike):
        return [os.fspath(cell)]
    return [os.fspath(c) for c in cell]


def check_multitask_item(d: Mapping[str, Any], metadata: Any) -> list[Problem]:
    """Image, and each label PNG of its object / part / material tasks: readable, of the label
    size (``label_hw``, else the image's), every number 0, a class of the task or a number the
    task ignores (``read_multitask_label``'s checks, each reported)."""
    problems, hw = check_image(d)
    label_hw = tuple(d["label_hw"]) if "label_hw" in d else hw
    for task in (t for t in MAP_TASKS if t in d.get("tasks", ())):
        lut = number_lookup(metadata, task)
        for path in _layers(d.get(f"{task}_file_name", "")):
            try:
                numbers = decode_label_numbers(path)
            except (OSError, ValueError) as err:
                problems.append(_read_problem(path, f"{task}_file_name", err, "a label PNG"))
                continue
            problems += _size_problem(path, numbers.shape, label_hw)
            unknown = unknown_label_numbers(numbers, lut[numbers])
            if unknown:
                expected = f"0 or a '{task}' number of label.csv / c_{task}.csv"
                problems.append(Problem(path, f"{task} label numbers", str(unknown), expected))
    return problems


def check_images_only(d: Mapping[str, Any], metadata: Any) -> list[Problem]:
    """The image of a dict of a family without checks of its own."""
    return check_image(d)[0]
