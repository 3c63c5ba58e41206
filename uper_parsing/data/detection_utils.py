"""Image and label reading shared by every mapper and evaluator.

``read_sem_seg`` is *the* label reader: it maps stored label values to train ids as the dataset's
metadata says (``reduce_zero_label`` or ``label_id_map``) and checks the result, so training and
evaluation can never read a label file differently.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

__all__ = ["read_image", "read_sem_seg", "label_lookup_table", "check_image_size"]

_FORMAT_CONVERSIONS = {"RGB": cv2.COLOR_BGR2RGB, "BGR": None}


def read_image(file_name: str | os.PathLike, format: str = "RGB") -> np.ndarray:
    """Read an image file with OpenCV (EXIF orientation applied).

    Args:
        file_name: path of the image.
        format: channel order of the result, "RGB" or "BGR".

    Returns:
        ndarray (H, W, 3) uint8.
    """
    if format not in _FORMAT_CONVERSIONS:
        raise ValueError(f"Unsupported image format '{format}'; expected one of RGB, BGR")
    file_name = os.fspath(file_name)
    if not os.path.isfile(file_name):
        raise FileNotFoundError(f"Image file not found: {file_name}")
    image = cv2.imread(file_name, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"Could not decode image file {file_name}")
    code = _FORMAT_CONVERSIONS[format]
    return cv2.cvtColor(image, code) if code is not None else image


def label_lookup_table(metadata: Any, num_values: int = 256) -> np.ndarray:
    """Lookup table from stored label values to train ids, as ``metadata`` describes.

    ``reduce_zero_label``: 0 -> ignore_label, v -> v - 1 (ignore_label stays ignore_label).
    ``label_id_map`` ({stored: train id}): unmapped values -> ignore_label. Neither: identity.

    Returns:
        ndarray (num_values,) int64; ``lut[stored] = train id``.
    """
    ignore = int(metadata.get("ignore_label", 255))
    reduce_zero = bool(metadata.get("reduce_zero_label", False))
    id_map = metadata.get("label_id_map", None)
    if reduce_zero and id_map:
        raise ValueError("Metadata sets both reduce_zero_label and label_id_map; use one")
    values = np.arange(num_values, dtype=np.int64)
    if id_map:
        lut = np.full(num_values, ignore, dtype=np.int64)
        for stored, train_id in id_map.items():
            if 0 <= int(stored) < num_values:
                lut[int(stored)] = int(train_id)
        return lut
    if reduce_zero:
        lut = values - 1
        lut[0] = ignore
        if ignore < num_values:
            lut[ignore] = ignore
        return lut
    return values


def read_sem_seg(
    file_name: str | os.PathLike,
    metadata: Any,
    expected_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """Read a semantic label file and return train ids, checked against ``metadata``.

    Args:
        file_name: single-channel PNG (8 or 16 bit) of stored label values.
        metadata: the dataset's ``Metadata`` (or a dict) with ``stuff_classes``, ``ignore_label``
            (default 255) and optionally ``reduce_zero_label`` / ``label_id_map``.
        expected_hw: (height, width) the label must have (usually the image's), or None.

    Returns:
        ndarray (H, W) of train ids: uint8 when they fit, else int64. Every value is
        ``< len(stuff_classes)`` or ``== ignore_label``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be decoded, is not single-channel, has the wrong size or holds
            values that map outside the classes (the message names the file and the values).
    """
    file_name = os.fspath(file_name)
    if not os.path.isfile(file_name):
        raise FileNotFoundError(f"Label file not found: {file_name}")
    stored = cv2.imread(file_name, cv2.IMREAD_UNCHANGED)
    if stored is None:
        raise ValueError(f"Could not decode label file {file_name}")
    if stored.ndim != 2 or stored.dtype not in (np.uint8, np.uint16):
        raise ValueError(
            f"Label file {file_name} must be a single-channel 8- or 16-bit image of class ids, "
            f"got shape {stored.shape} and dtype {stored.dtype}"
        )
    if expected_hw is not None and tuple(stored.shape) != tuple(expected_hw):
        raise ValueError(
            f"Label file {file_name} has size (H, W) = {tuple(stored.shape)} but its image has "
            f"size {tuple(expected_hw)}"
        )
    lut = label_lookup_table(metadata, num_values=256 if stored.dtype == np.uint8 else 65536)
    _check_values(file_name, stored, lut, metadata)
    labels = lut[stored]
    return labels.astype(np.uint8) if labels.max(initial=0) <= 255 else labels


def _check_values(file_name: str, stored: np.ndarray, lut: np.ndarray, metadata: Any) -> None:
    """Raise ValueError when a stored value present in the file maps outside the classes."""
    num_classes = len(metadata.get("stuff_classes", None) or [])
    if num_classes == 0:
        raise ValueError("Metadata has no stuff_classes; cannot check labels of " + file_name)
    ignore = int(metadata.get("ignore_label", 255))
    present = np.flatnonzero(np.bincount(stored.ravel(), minlength=len(lut)))
    mapped = lut[present]
    bad = (mapped >= num_classes) | (mapped < 0)
    bad &= mapped != ignore
    if not bad.any():
        return
    pairs = [f"{s}->{m}" if s != m else str(s) for s, m in zip(present[bad], mapped[bad])]
    shown = ", ".join(pairs[:10]) + (f" (and {len(pairs) - 10} more)" if len(pairs) > 10 else "")
    mapping = _mapping_name(metadata)
    raise ValueError(
        f"Label file {file_name} has invalid label values [{shown}] ({mapping}); valid train ids "
        f"are 0..{num_classes - 1} ({num_classes} stuff_classes) or the ignore_label {ignore}"
    )


def _mapping_name(metadata: Any) -> str:
    if metadata.get("label_id_map", None):
        return "stored -> train id via label_id_map"
    if metadata.get("reduce_zero_label", False):
        return "stored -> train id via reduce_zero_label"
    return "stored values used as train ids"


def check_image_size(dataset_dict: Mapping[str, Any], image: np.ndarray) -> None:
    """Raise ValueError when ``image`` (H, W, ...) disagrees with the dict's height / width."""
    hw = tuple(image.shape[:2])
    expected = (dataset_dict.get("height", hw[0]), dataset_dict.get("width", hw[1]))
    if hw != tuple(expected):
        raise ValueError(
            f"Image {dataset_dict.get('file_name', '<unknown>')} has size (H, W) = {hw} but its "
            f"dataset dict says {tuple(expected)}"
        )
