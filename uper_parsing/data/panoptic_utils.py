"""Panoptic label reading: the one place COCO-panoptic PNGs and their ``segments_info`` are read.

A panoptic PNG stores one segment id per pixel as RGB, ``id = R + 256 G + 256^2 B`` (0 = void).
The dataset dict lists the segments in ``segments_info`` (``id``, ``category_id`` = contiguous id
within its group, ``isthing``, ``iscrowd``). From the ids this module derives the Panoptic FPN
semantic map (0 = any thing, ``1 + s`` = stuff class ``s``, ignore elsewhere) and the instance
targets (non-crowd things) of torchvision's detection format. The mapper and the evaluators both
read through these functions, so training and evaluation can never read a label differently.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .readers import read_unchanged

__all__ = [
    "rgb2id",
    "id2rgb",
    "read_panoptic",
    "read_panoptic_ids",
    "segment_id_mismatch",
    "check_segments_info",
    "panoptic_semantic",
    "read_panoptic_semantic",
    "panoptic_instances",
    "segment_index_map",
]

_MAX_ID = 256**3 - 1


def rgb2id(color: np.ndarray) -> np.ndarray:
    """Segment ids of an RGB-encoded panoptic image.

    Args:
        color: ndarray (H, W, 3) uint8 in **RGB** order.

    Returns:
        ndarray (H, W) int64, ``R + 256 G + 256^2 B``.
    """
    if color.ndim != 3 or color.shape[2] != 3:
        raise ValueError(f"rgb2id expects an (H, W, 3) RGB array, got shape {color.shape}")
    c = color.astype(np.int64)
    return c[..., 0] + 256 * c[..., 1] + 256 * 256 * c[..., 2]


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """RGB encoding of segment ids (inverse of :func:`rgb2id`).

    Args:
        ids: ndarray (H, W) of integers in ``[0, 256^3 - 1]``.

    Returns:
        ndarray (H, W, 3) uint8 in RGB order.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() > _MAX_ID):
        raise ValueError(
            f"Panoptic segment ids must lie in [0, {_MAX_ID}], got [{ids.min()}, {ids.max()}]"
        )
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def _segment_ids(segments_info: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """(N,) int64 ids of ``segments_info`` in list order."""
    return np.array([int(s["id"]) for s in segments_info], dtype=np.int64)


def _lookup(ids: np.ndarray, keys: np.ndarray, values: np.ndarray, default: int) -> np.ndarray:
    """``values[k]`` where ``ids == keys[k]``, ``default`` where ``ids`` is no key.

    Args:
        ids: ndarray (H, W) int64. keys: (N,) distinct int64. values: (N,).

    Returns:
        ndarray (H, W) of ``values``' dtype.
    """
    out = np.full(ids.shape, default, dtype=values.dtype)
    if len(keys) == 0:
        return out
    order = np.argsort(keys)
    sorted_keys = keys[order]
    pos = np.clip(np.searchsorted(sorted_keys, ids), 0, len(keys) - 1)
    hit = sorted_keys[pos] == ids
    out[hit] = values[order][pos[hit]]
    return out


def read_panoptic(dataset_dict: Mapping[str, Any]) -> np.ndarray:
    """Read the segment ids of a dataset dict's panoptic PNG, checked against ``segments_info``.

    Args:
        dataset_dict: with ``pan_seg_file_name`` (RGB PNG), ``segments_info`` and optionally
            ``height`` / ``width``.

    Returns:
        ndarray (H, W) int64 segment ids (0 = void).

    Raises:
        FileNotFoundError: the PNG does not exist.
        ValueError: the PNG cannot be decoded, is not 3-channel 8-bit, has another size than the
            dict's ``height`` x ``width``, lists a segment id twice, lacks a listed segment or holds
            a non-zero id that ``segments_info`` does not list (the message names PNG and id).
    """
    path = os.fspath(dataset_dict["pan_seg_file_name"])
    ids = read_panoptic_ids(path)
    expected = (dataset_dict.get("height", ids.shape[0]), dataset_dict.get("width", ids.shape[1]))
    if ids.shape != tuple(expected):
        raise ValueError(
            f"Panoptic PNG {path} has size (H, W) = {ids.shape} but its dataset dict says "
            f"height, width = {tuple(expected)}"
        )
    listed = _segment_ids(dataset_dict["segments_info"])
    uniq, counts = np.unique(listed, return_counts=True)
    if (counts > 1).any():
        raise ValueError(
            f"segment id {uniq[counts > 1][0]} is listed twice in segments_info of {path}"
        )
    missing, unlisted = segment_id_mismatch(ids, dataset_dict["segments_info"])
    if missing:
        raise ValueError(
            f"segment id {missing[0]} listed in segments_info is absent from {path}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    if unlisted:
        raise ValueError(
            f"segment id {unlisted[0]} of {path} is not listed in segments_info"
            + (f" (and {len(unlisted) - 1} more)" if len(unlisted) > 1 else "")
        )
    return ids


def read_panoptic_ids(path: str | os.PathLike) -> np.ndarray:
    """The segment ids (H, W) int64 of a panoptic PNG, unchecked against any ``segments_info``.

    Raises:
        FileNotFoundError / ValueError (undecodable, not 3-channel 8-bit), naming the PNG.
    """
    path = os.fspath(path)
    bgr = read_unchanged(path, "Panoptic PNG")
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise ValueError(
            f"Panoptic PNG {path} must be a 3-channel 8-bit RGB image of segment ids, got shape "
            f"{bgr.shape} and dtype {bgr.dtype}"
        )
    return rgb2id(bgr[..., ::-1])


def segment_id_mismatch(
    ids: np.ndarray, segments_info: Sequence[Mapping[str, Any]]
) -> tuple[list[int], list[int]]:
    """(ids listed in ``segments_info`` but absent from ``ids``, non-zero ids of ``ids`` not
    listed), each sorted."""
    listed = _segment_ids(segments_info)
    present = np.unique(ids)
    missing = np.setdiff1d(listed, present)
    unlisted = np.setdiff1d(present[present != 0], listed)
    return missing.tolist(), unlisted.tolist()


def check_segments_info(dataset_dict: Mapping[str, Any], metadata: Any) -> None:
    """Check that every segment's ``category_id`` is a contiguous id of its group.

    Things need ``0 <= category_id < len(metadata.thing_classes)``, stuff
    ``0 <= category_id < len(metadata.stuff_classes)`` (a group the metadata does not list is not
    checked). Raises ValueError naming the PNG, the segment id and the valid range.
    """
    path = dataset_dict.get("pan_seg_file_name", dataset_dict.get("file_name", "<unknown>"))
    sizes = {
        True: ("thing_classes", metadata.get("thing_classes", None)),
        False: ("stuff_classes", metadata.get("stuff_classes", None)),
    }
    for s in dataset_dict["segments_info"]:
        key, classes = sizes[bool(s["isthing"])]
        if classes is not None and not 0 <= int(s["category_id"]) < len(classes):
            raise ValueError(
                f"segment id {s['id']} of {path} has category_id {s['category_id']} "
                f"(isthing={bool(s['isthing'])}); expected a contiguous id in "
                f"0..{len(classes) - 1} ({len(classes)} {key})"
            )


def panoptic_semantic(
    ids: np.ndarray, segments_info: Sequence[Mapping[str, Any]], ignore_label: int = 255
) -> np.ndarray:
    """The Panoptic FPN semantic map of a segment id map.

    Args:
        ids: ndarray (H, W) int segment ids.
        segments_info: the segments (``id``, ``category_id``, ``isthing``).
        ignore_label: value of void pixels and of ids not in ``segments_info``.

    Returns:
        ndarray (H, W) uint8: 0 for thing segments (crowd included), ``1 + category_id`` for
        stuff segments, ``ignore_label`` elsewhere.
    """
    keys = _segment_ids(segments_info)
    values = np.array(
        [0 if s["isthing"] else 1 + int(s["category_id"]) for s in segments_info], dtype=np.int64
    )
    sem = _lookup(np.asarray(ids, dtype=np.int64), keys, values, ignore_label)
    if sem.size and sem.max() > 255:
        raise ValueError(f"Semantic value {sem.max()} does not fit uint8 (stuff category too big)")
    return sem.astype(np.uint8)


def read_panoptic_semantic(
    dataset_dict: Mapping[str, Any], metadata: Any, ids: np.ndarray | None = None
) -> np.ndarray:
    """The Panoptic FPN semantic map of a dataset dict.

    Args:
        dataset_dict: a panoptic dataset dict; ``sem_seg_file_name`` (single-channel PNG of
            semantic values) is read when present, else the map is derived from the PNG.
        metadata: the dataset's ``Metadata`` with ``stuff_classes`` (K_st), ``ignore_label``.
        ids: ndarray (H, W) int64 from :func:`read_panoptic` when already read (saves reading the
            PNG twice); only used without ``sem_seg_file_name``.

    Returns:
        ndarray (H, W) uint8: 0 = thing, ``1 + s`` = stuff class ``s``, ``ignore_label`` = void.

    Raises:
        FileNotFoundError / ValueError: the semantic file is missing, undecodable, of another size
            than ``height`` x ``width``, or holds a value ``> K_st`` other than ``ignore_label``
            (the message names the file and the value).
    """
    ignore = int(metadata.get("ignore_label", 255))
    num_stuff = len(metadata.get("stuff_classes", None) or [])
    if "sem_seg_file_name" not in dataset_dict:
        check_segments_info(dataset_dict, metadata)
        if ids is None:
            ids = read_panoptic(dataset_dict)
        return panoptic_semantic(ids, dataset_dict["segments_info"], ignore)
    path = os.fspath(dataset_dict["sem_seg_file_name"])
    sem = read_unchanged(path, "Panoptic semantic label file")
    if sem.ndim != 2 or sem.dtype != np.uint8:
        raise ValueError(
            f"Panoptic semantic label file {path} must be single-channel 8-bit, got shape "
            f"{sem.shape} and dtype {sem.dtype}"
        )
    expected = (dataset_dict.get("height", sem.shape[0]), dataset_dict.get("width", sem.shape[1]))
    if sem.shape != tuple(expected):
        raise ValueError(
            f"Panoptic semantic label file {path} has size (H, W) = {sem.shape} but its dataset "
            f"dict says height, width = {tuple(expected)}"
        )
    present = np.flatnonzero(np.bincount(sem.ravel(), minlength=256))
    bad = present[(present > num_stuff) & (present != ignore)]
    if bad.size:
        raise ValueError(
            f"Panoptic semantic label file {path} has invalid value {bad[0]}; valid values are "
            f"0 (things), 1..{num_stuff} (1 + stuff class, {num_stuff} stuff_classes) or the "
            f"ignore_label {ignore}"
        )
    return sem


def panoptic_instances(
    ids: np.ndarray, segments_info: Sequence[Mapping[str, Any]]
) -> dict[str, np.ndarray]:
    """Instance targets (torchvision detection format) of the non-crowd things in ``ids``.

    Args:
        ids: ndarray (H, W) int segment ids.
        segments_info: the segments (``id``, ``category_id``, ``isthing``, ``iscrowd``); things
            whose id does not occur in ``ids`` are skipped.

    Returns:
        dict, in ``segments_info`` order:
            ``boxes``: ndarray (N, 4) float32 XYXY, the tight box of each mask
            (``x2 = max col + 1``, ``y2 = max row + 1``, so widths and heights are >= 1);
            ``labels``: ndarray (N,) int64 thing ids (``category_id``);
            ``masks``: ndarray (N, H, W) uint8 (0 / 1).
    """
    ids = np.asarray(ids)
    things = [s for s in segments_info if s["isthing"] and not s.get("iscrowd", 0)]
    masks = ids[None] == _segment_ids(things)[:, None, None]
    keep = masks.any(axis=(1, 2))
    masks = masks[keep]
    labels = np.array([int(s["category_id"]) for s in things], dtype=np.int64)[keep]
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    if len(masks):
        rows, cols = masks.any(axis=2), masks.any(axis=1)  # (N, H), (N, W)
        boxes[:, 0] = cols.argmax(axis=1)
        boxes[:, 1] = rows.argmax(axis=1)
        boxes[:, 2] = cols.shape[1] - cols[:, ::-1].argmax(axis=1)
        boxes[:, 3] = rows.shape[1] - rows[:, ::-1].argmax(axis=1)
    return {"boxes": boxes, "labels": labels, "masks": masks.astype(np.uint8)}


def segment_index_map(
    ids: np.ndarray, segments_info: Sequence[Mapping[str, Any]], offset: int = 256
) -> np.ndarray:
    """Dense index of each pixel's segment: ``k + offset`` where ``ids`` is ``segments_info[k]``'s
    id, 0 elsewhere (void, unlisted ids).

    With ``offset`` above every fill value used for label maps (the ignore label, 255), the map can
    be padded and resized (nearest) like any label map without a segment colliding with void or
    padding, however many segments there are.

    Args:
        ids: ndarray (H, W) int segment ids.
        segments_info: the segments (``id``).
        offset: index of the first segment (> any fill value).

    Returns:
        ndarray (H, W) int64.
    """
    keys = _segment_ids(segments_info)
    values = np.arange(len(keys), dtype=np.int64) + offset
    return _lookup(np.asarray(ids, dtype=np.int64), keys, values, 0)
