"""Panoptic segments as pictures see them: names, colours, pixel positions, legend entries.

Stuff takes its ``stuff_colors`` entry; every instance of a thing class its ``thing_colors`` entry,
moved by a deterministic step per further instance so that neighbours of one class stay apart.
Segment ids and ``segments_info`` follow the panoptic contract (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .colormap import colormap, palette_for
from .layout import LegendEntry

__all__ = [
    "panoptic_legend",
    "panoptic_title",
    "segment_class_name",
    "segment_colors",
    "segment_label",
    "segment_positions",
    "segments_from_instances",
]

# Each further instance of a thing class moves every RGB channel of the class colour by this much.
_INSTANCE_JITTER = (40.0, 70.0)


def segment_class_name(segment: Mapping[str, Any], metadata: Any) -> str:
    """Class name of a panoptic segment: ``thing_classes[category_id]`` when ``isthing``, else
    ``stuff_classes[category_id]``; the id as text when the metadata does not name it."""
    names = getattr(metadata, "thing_classes" if segment["isthing"] else "stuff_classes", None)
    category = int(segment["category_id"])
    return str(names[category]) if names and 0 <= category < len(names) else str(category)


def segment_label(segment: Mapping[str, Any], metadata: Any) -> str:
    """What a segment's name box says: "car 87%" for scored things, "person (crowd)" for crowd
    regions, the class name otherwise."""
    name = segment_class_name(segment, metadata)
    if segment["isthing"] and segment.get("score") is not None:
        return f"{name} {100 * float(segment['score']):.0f}%"
    if segment.get("iscrowd"):
        return f"{name} (crowd)"
    return name


def _group_palettes(
    metadata: Any, segments_info: Sequence[Mapping[str, Any]]
) -> tuple[np.ndarray, np.ndarray]:
    """(thing palette (K_th, 3), stuff palette (K_st, 3)) uint8 RGB: the metadata colours,
    completed by :func:`colormap` (things continue after stuff so the two groups differ)."""
    sizes = {True: 0, False: 0}
    for segment in segments_info:
        group = bool(segment["isthing"])
        sizes[group] = max(sizes[group], int(segment["category_id"]) + 1)
    num_stuff = max(sizes[False], len(getattr(metadata, "stuff_classes", None) or []), 1)
    num_things = max(sizes[True], len(getattr(metadata, "thing_classes", None) or []), 1)
    stuff = palette_for(getattr(metadata, "stuff_colors", None), num_stuff)
    things = colormap(num_stuff + num_things)[num_stuff:]
    given = getattr(metadata, "thing_colors", None)
    if given:
        given = np.asarray(given, dtype=np.int64).reshape(-1, 3)[:num_things]
        things[: len(given)] = np.clip(given, 0, 255).astype(np.uint8)
    return things, stuff


def _instance_color(base: np.ndarray, rank: int) -> np.ndarray:
    """Colour of the ``rank``-th instance (0-based) of a thing class of colour ``base`` (3,) uint8.

    Rank 0 keeps ``base``; rank ``k`` moves each channel by a fixed step of 40 to 70 with a sign
    drawn from a generator seeded with ``k`` (deterministic), reflected where it would leave
    [0, 255], so every channel differs from ``base`` by at least 40.
    """
    if rank == 0:
        return base
    rng = np.random.default_rng(rank)
    step = rng.uniform(*_INSTANCE_JITTER, size=3) * rng.choice([-1.0, 1.0], size=3)
    color = base.astype(np.float64) + step
    color = np.where((color < 0) | (color > 255), base - step, color)
    return np.round(color).astype(np.uint8)


def segment_colors(segments_info: Sequence[Mapping[str, Any]], metadata: Any) -> np.ndarray:
    """(S + 1, 3) uint8 RGB: the colour of each segment, in ``segments_info`` order (the extra
    last row keeps the palette non-empty)."""
    things, stuff = _group_palettes(metadata, segments_info)
    ranks: dict[int, int] = {}
    colors = []
    for segment in segments_info:
        category = int(segment["category_id"])
        if segment["isthing"]:
            rank = ranks.get(category, 0)
            ranks[category] = rank + 1
            colors.append(_instance_color(things[category], rank))
        else:
            colors.append(stuff[category])
    return np.array(colors + [(0, 0, 0)], dtype=np.uint8).reshape(-1, 3)


def segment_positions(ids: np.ndarray, segments_info: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """(H, W) int64 position in ``segments_info`` of each pixel's segment id, -1 for void (0).

    Raises:
        ValueError: a non-zero id of ``ids`` (H, W) int64 is not in ``segments_info``.
    """
    keys = np.array([int(s["id"]) for s in segments_info], dtype=np.int64)
    present = np.unique(ids[ids != 0])
    unlisted = np.setdiff1d(present, keys)
    if unlisted.size:
        raise ValueError(
            f"panoptic seg_map holds segment id {unlisted[0]} that segments_info does not list "
            f"(listed ids: {keys.tolist()})"
        )
    if not keys.size:
        return np.full(ids.shape, -1, dtype=np.int64)
    order = np.argsort(keys)
    position = np.clip(np.searchsorted(keys[order], ids), 0, keys.size - 1)
    return np.where(ids != 0, order[position], -1)


def panoptic_title(title: str, segments_info: Sequence[Mapping[str, Any]]) -> str:
    """``title`` with its segment counts: "prediction (3 things + 2 stuff)"."""
    things = sum(1 for s in segments_info if s["isthing"])
    plural = "" if things == 1 else "s"
    return f"{title} ({things} thing{plural} + {len(segments_info) - things} stuff)"


def panoptic_legend(
    maps: Sequence[tuple[np.ndarray, Sequence[Mapping[str, Any]]]], metadata: Any
) -> list[LegendEntry]:
    """One entry (class name, class colour) per class present in any of the (ids (H, W),
    segments_info) maps, by total area, largest first; things before stuff on ties."""
    areas: dict[tuple[bool, int], int] = {}
    for ids, segments_info in maps:
        present, counts = np.unique(ids, return_counts=True)
        count_of = dict(zip(present.tolist(), counts.tolist()))
        for segment in segments_info:
            key = (bool(segment["isthing"]), int(segment["category_id"]))
            areas[key] = areas.get(key, 0) + count_of.get(int(segment["id"]), 0)
    things, stuff = _group_palettes(metadata, [s for _, info in maps for s in info])
    entries = []
    for (isthing, category), area in sorted(areas.items(), key=lambda kv: (-kv[1], not kv[0][0])):
        if area == 0:
            continue
        color = tuple(int(c) for c in (things if isthing else stuff)[category])
        name = segment_class_name({"isthing": isthing, "category_id": category}, metadata)
        entries.append(LegendEntry(name, color))
    return entries


def segments_from_instances(
    sem_seg: np.ndarray | torch.Tensor, instances: Mapping[str, Any], ignore_label: int = 255
) -> tuple[np.ndarray, list[dict]]:
    """The panoptic segmentation of a mapped Panoptic FPN training input.

    Args:
        sem_seg: (H, W) semantic map: 0 = thing, ``1 + s`` = stuff class ``s``, ``ignore_label``.
        instances: ``masks`` (N, H, W) and ``labels`` (N,) thing ids.
        ignore_label: the void value of ``sem_seg``.

    Returns:
        (ids (H, W) int64, segments_info): stuff class ``s`` is segment ``1 + s``; instance ``k``
        (``category_id`` its label) is segment ``first + k``, ``first`` above every stuff id and
        the ignore label; thing pixels of no instance (crowd regions) and ignored pixels are void.
    """
    sem = np.asarray(torch.as_tensor(sem_seg).cpu(), dtype=np.int64)
    masks = np.asarray(torch.as_tensor(instances["masks"]).cpu(), dtype=bool)
    labels = np.asarray(torch.as_tensor(instances["labels"]).cpu(), dtype=np.int64)
    ids = np.where((sem > 0) & (sem != ignore_label), sem, 0)
    info = [{"id": int(v), "isthing": False, "category_id": int(v) - 1} for v in np.unique(ids)]
    info = [s for s in info if s["id"] > 0]
    first = int(max(ids.max(initial=0), ignore_label)) + 1
    for k, (mask, label) in enumerate(zip(masks, labels)):
        ids[mask] = first + k
        info.append({"id": first + k, "isthing": True, "category_id": int(label)})
    return ids, info
