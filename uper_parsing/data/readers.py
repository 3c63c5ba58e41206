"""Image and label reading shared by every mapper and evaluator.

``read_sem_seg`` is *the* label reader: it maps stored label values to train ids as the dataset's
metadata says (``reduce_zero_label`` or ``label_id_map``) and checks the result, so training and
evaluation can never read a label file differently.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping
from typing import Any

import cv2
import numpy as np
from PIL import Image

__all__ = [
    "TruncatedImageError",
    "read_image",
    "jpeg_truncation",
    "read_sem_seg",
    "read_label_values",
    "read_unchanged",
    "invalid_label_values",
    "format_label_values",
    "label_mapping_name",
    "valid_train_ids",
    "label_lookup_table",
    "check_image_size",
]

_FORMAT_CONVERSIONS = {"RGB": cv2.COLOR_BGR2RGB, "BGR": None}
_JPEG_START = b"\xff\xd8\xff"  # SOI marker + the first segment's marker
_JPEG_END = b"\xff\xd9"  # EOI marker
_JPEG_TAIL = 1 << 16  # bytes searched for EOI behind trailing zero padding


class TruncatedImageError(OSError):
    """An image file whose data ends before the image does (a partial copy or download), which
    OpenCV would decode to a partly grey image with only a console warning. ``reason`` says what
    is missing."""

    reason: str = ""

    @classmethod
    def of(cls, file_name: str, reason: str) -> TruncatedImageError:
        err = cls(f"Image file {file_name} is truncated: {reason}")
        err.reason = reason
        return err


def jpeg_truncation(data: np.ndarray | bytes) -> str | None:
    """Why the JPEG in ``data`` ends early, or None when it is complete or not a JPEG.

    Cheap for complete files: a JPEG whose data ends with the end-of-image marker 0xFFD9 (after
    any zero padding) is complete. Only a JPEG that does not (truncated, or with bytes appended
    after its end, as some cameras write) is decoded by PIL, which fails where data ends early.
    """
    data = np.frombuffer(data, np.uint8) if isinstance(data, bytes) else data
    if data[: len(_JPEG_START)].tobytes() != _JPEG_START:
        return None
    if data[-_JPEG_TAIL:].tobytes().rstrip(b"\0").endswith(_JPEG_END):
        return None
    try:
        with Image.open(io.BytesIO(data.tobytes())) as image:
            image.load()
    except OSError:  # PIL: "image file is truncated (N bytes not processed)"
        return "the JPEG data ends before its end-of-image marker 0xFFD9"
    return None


def read_image(file_name: str | os.PathLike, format: str = "RGB") -> np.ndarray:
    """Read an image file with OpenCV (EXIF orientation applied).

    Args:
        file_name: path of the image.
        format: channel order of the result, "RGB" or "BGR".

    Returns:
        ndarray (H, W, 3) uint8.

    Raises:
        FileNotFoundError: the file does not exist.
        TruncatedImageError: a JPEG whose data ends early (``jpeg_truncation``).
        ValueError: the file is empty or cannot be decoded.
    """
    if format not in _FORMAT_CONVERSIONS:
        raise ValueError(f"Unsupported image format '{format}'; expected one of RGB, BGR")
    file_name = os.fspath(file_name)
    if not os.path.isfile(file_name):
        raise FileNotFoundError(f"Image file not found: {file_name}")
    data = np.fromfile(file_name, dtype=np.uint8)
    if data.size == 0:
        raise ValueError(f"Image file {file_name} is empty")
    truncation = jpeg_truncation(data)
    if truncation is not None:
        raise TruncatedImageError.of(file_name, truncation)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
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
    stored = read_label_values(file_name)
    if expected_hw is not None and tuple(stored.shape) != tuple(expected_hw):
        raise ValueError(
            f"Label file {file_name} has size (H, W) = {tuple(stored.shape)} but its image has "
            f"size {tuple(expected_hw)}"
        )
    lut = _lookup_for(stored, metadata)
    _check_values(file_name, stored, lut, metadata)
    labels = lut[stored]
    return labels.astype(np.uint8) if labels.max(initial=0) <= 255 else labels


def read_unchanged(file_name: str | os.PathLike, what: str) -> np.ndarray:
    """``cv2.imread(file_name, IMREAD_UNCHANGED)``: the stored channels, bit depth and values.

    Raises:
        FileNotFoundError / ValueError (undecodable), naming ``what`` (e.g. "Label file") and the
        file.
    """
    file_name = os.fspath(file_name)
    if not os.path.isfile(file_name):
        raise FileNotFoundError(f"{what} not found: {file_name}")
    stored = cv2.imread(file_name, cv2.IMREAD_UNCHANGED)
    if stored is None:
        raise ValueError(f"Could not decode {what[:1].lower()}{what[1:]} {file_name}")
    return stored


def read_label_values(file_name: str | os.PathLike) -> np.ndarray:
    """The stored values of a semantic label file: ndarray (H, W) uint8 / uint16.

    Raises:
        FileNotFoundError / ValueError (undecodable, not single-channel 8 / 16 bit), naming the
        file.
    """
    file_name = os.fspath(file_name)
    stored = read_unchanged(file_name, "Label file")
    if stored.ndim != 2 or stored.dtype not in (np.uint8, np.uint16):
        raise ValueError(
            f"Label file {file_name} must be a single-channel 8- or 16-bit image of class ids, "
            f"got shape {stored.shape} and dtype {stored.dtype}"
        )
    return stored


def _lookup_for(stored: np.ndarray, metadata: Any) -> np.ndarray:
    return label_lookup_table(metadata, num_values=256 if stored.dtype == np.uint8 else 65536)


def invalid_label_values(stored: np.ndarray, metadata: Any) -> list[tuple[int, int]]:
    """(stored value, train id) of each value present in ``stored`` (from
    ``read_label_values``) whose train id is neither a class of ``metadata.stuff_classes`` nor
    its ``ignore_label``, in increasing stored value."""
    lut = _lookup_for(stored, metadata)
    present, mapped, bad = _invalid(stored, lut, metadata)
    return [(int(s), int(m)) for s, m in zip(present[bad], mapped[bad])]


def _invalid(
    stored: np.ndarray, lut: np.ndarray, metadata: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(present stored values, their train ids, which are invalid)."""
    num_classes = len(metadata.get("stuff_classes", None) or [])
    ignore = int(metadata.get("ignore_label", 255))
    present = np.flatnonzero(np.bincount(stored.ravel(), minlength=len(lut)))
    mapped = lut[present]
    bad = ((mapped >= num_classes) | (mapped < 0)) & (mapped != ignore)
    return present, mapped, bad


def _check_values(file_name: str, stored: np.ndarray, lut: np.ndarray, metadata: Any) -> None:
    """Raise ValueError when a stored value present in the file maps outside the classes."""
    num_classes = len(metadata.get("stuff_classes", None) or [])
    if num_classes == 0:
        raise ValueError("Metadata has no stuff_classes; cannot check labels of " + file_name)
    present, mapped, bad = _invalid(stored, lut, metadata)
    if not bad.any():
        return
    shown = format_label_values(zip(present[bad].tolist(), mapped[bad].tolist()))
    raise ValueError(
        f"Label file {file_name} has invalid label values [{shown}] "
        f"({label_mapping_name(metadata)}); valid train ids are {valid_train_ids(metadata)}"
    )


def format_label_values(pairs: Iterable[tuple[int, int]], limit: int = 10) -> str:
    """``"7, 9->8"``: (stored value, train id) pairs, the train id shown where it differs; at
    most ``limit`` of them."""
    shown = [f"{s}->{m}" if s != m else str(s) for s, m in pairs]
    more = f" (and {len(shown) - limit} more)" if len(shown) > limit else ""
    return ", ".join(shown[:limit]) + more


def valid_train_ids(metadata: Any) -> str:
    """``"0..K-1 (K stuff_classes) or the ignore_label I"``: what a semantic label may hold."""
    num_classes = len(metadata.get("stuff_classes", None) or [])
    ignore = int(metadata.get("ignore_label", 255))
    return f"0..{num_classes - 1} ({num_classes} stuff_classes) or the ignore_label {ignore}"


def label_mapping_name(metadata: Any) -> str:
    """How stored label values become train ids, in words."""
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
