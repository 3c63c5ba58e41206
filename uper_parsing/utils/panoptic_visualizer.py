"""Pictures of panoptic segmentations (RGB uint8 throughout), drawn with the machinery of
:mod:`.visualizer`: the same blending, outlines, name boxes, legend and side-by-side panels.

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
from .visualizer import Visualizer, _as_label_map, _pad_to, draw_legend, draw_side_by_side

__all__ = ["draw_panoptic_seg", "segment_class_name", "visualize_panoptic_prediction"]

# Each further instance of a thing class moves every RGB channel of the class colour by this much.
_INSTANCE_JITTER = (40.0, 70.0)


def segment_class_name(segment: Mapping[str, Any], metadata: Any) -> str:
    """Class name of a panoptic segment: ``thing_classes[category_id]`` when ``isthing``, else
    ``stuff_classes[category_id]``; the id as text when the metadata does not name it."""
    names = getattr(metadata, "thing_classes" if segment["isthing"] else "stuff_classes", None)
    category = int(segment["category_id"])
    return str(names[category]) if names and 0 <= category < len(names) else str(category)


def _segment_label(segment: Mapping[str, Any], metadata: Any) -> str:
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


def _segment_colors(segments_info: Sequence[Mapping[str, Any]], metadata: Any) -> np.ndarray:
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


def _segment_index_map(ids: np.ndarray, segments_info: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """(H, W) int64 position in ``segments_info`` of each pixel's segment id, -1 for void (0).

    Raises:
        ValueError: a non-zero id of ``ids`` (H, W) int64 is not in ``segments_info``.
    """
    keys = np.array([int(s["id"]) for s in segments_info], dtype=np.int64)
    index_map = np.full(ids.shape, -1, dtype=np.int64)
    present = np.unique(ids[ids != 0])
    unlisted = np.setdiff1d(present, keys)
    if unlisted.size:
        raise ValueError(
            f"panoptic seg_map holds segment id {unlisted[0]} that segments_info does not list "
            f"(listed ids: {keys.tolist()})"
        )
    if keys.size:
        order = np.argsort(keys)
        position = np.clip(np.searchsorted(keys[order], ids), 0, keys.size - 1)
        index_map = np.where(ids != 0, order[position], -1)
    return index_map


def _draw_segments(
    visualizer: Visualizer,
    seg_map: np.ndarray | torch.Tensor,
    segments_info: Sequence[Mapping[str, Any]],
    *,
    alpha: float = 0.5,
    area_threshold: int | None = None,
) -> np.ndarray:
    """Segments blended over ``visualizer``'s image, their outlines and one name per segment.

    Stuff gets its ``stuff_colors`` entry; each thing instance its ``thing_colors`` entry, the
    first of a class exactly, the next ones moved by a fixed per-rank step, so that touching
    instances of one class stay apart. Void (id 0) is left as the image.

    Args:
        seg_map: (H, W) int segment ids at the image's size, 0 = void.
        segments_info: the segments (``id``, ``isthing``, ``category_id`` = thing or stuff
            index, optional ``score`` and ``iscrowd``), as in the panoptic contract.
        alpha: opacity of the segment colours.
        area_threshold: stuff segments smaller than this many input pixels get no name;
            default 0.5% of the image. Things are always named (when there is room).

    Returns:
        (H', W', 3) uint8 RGB at the visualizer's output size, no legend.
    """
    index_map = _segment_index_map(visualizer.prepare_labels(seg_map), segments_info)
    valid = index_map >= 0
    palette = _segment_colors(segments_info, visualizer.metadata)
    canvas = visualizer._blend(index_map, valid, palette, alpha)
    visualizer._draw_edges(canvas, index_map, valid, palette)
    if area_threshold is None:
        area_threshold = max(1, round(0.005 * visualizer.input_hw[0] * visualizer.input_hw[1]))
    stuff_min = area_threshold * visualizer.scale * visualizer.scale
    min_areas = np.array([1 if s["isthing"] else stuff_min for s in segments_info], np.float64)
    names = [_segment_label(s, visualizer.metadata) for s in segments_info]
    visualizer._draw_region_names(
        canvas, visualizer._segment_regions(index_map, min_areas), palette, names
    )
    return canvas


def draw_panoptic_seg(
    image: np.ndarray,
    seg_map: np.ndarray | torch.Tensor,
    segments_info: Sequence[Mapping[str, Any]],
    metadata: Any,
    *,
    alpha: float = 0.5,
    min_short_side: int = 0,
) -> np.ndarray:
    """A panoptic segmentation over its image (see :func:`_draw_segments`).

    Args:
        image: (H, W, 3) uint8 RGB.
        seg_map: (H, W) int segment ids (0 = void), numpy or torch.
        segments_info: the segments of ``seg_map`` (panoptic contract).
        metadata: ``thing_classes`` / ``thing_colors`` / ``stuff_classes`` / ``stuff_colors``.
        alpha: opacity of the segment colours.
        min_short_side: upscale small images to this short side first (0: draw at (H, W)).

    Returns:
        (H, W, 3) uint8 RGB (larger when upscaled).
    """
    visualizer = Visualizer(image, metadata, min_short_side=min_short_side)
    return _draw_segments(visualizer, seg_map, segments_info, alpha=alpha)


def _panoptic_title(title: str, segments_info: Sequence[Mapping[str, Any]]) -> str:
    """``title`` with its segment counts: "prediction (3 things + 2 stuff)"."""
    things = sum(1 for s in segments_info if s["isthing"])
    plural = "" if things == 1 else "s"
    return f"{title} ({things} thing{plural} + {len(segments_info) - things} stuff)"


def _panoptic_legend_entries(
    maps: Sequence[tuple[np.ndarray, Sequence[Mapping[str, Any]]]], metadata: Any
) -> list[tuple[str, tuple[int, int, int], float | None]]:
    """One legend entry (name, class colour, ``None``) per class present in any of the
    (ids (H, W), segments_info) maps, by total area, largest first; things before stuff on ties."""
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
        color = (things if isthing else stuff)[category]
        segment = {"isthing": isthing, "category_id": category}
        entries.append((segment_class_name(segment, metadata), tuple(int(c) for c in color), None))
    return entries


def visualize_panoptic_prediction(
    image: np.ndarray,
    panoptic_seg: tuple[np.ndarray | torch.Tensor, Sequence[Mapping[str, Any]]],
    metadata: Any,
    gt: tuple[np.ndarray, Sequence[Mapping[str, Any]]] | None = None,
    *,
    alpha: float = 0.5,
    min_short_side: int = 384,
) -> np.ndarray:
    """[image | prediction | ground truth] with titles and one legend of classes below.

    Args:
        image: (H, W, 3) uint8 RGB at the size the prediction was returned at.
        panoptic_seg: the model's ``(seg_map (H, W) int, segments_info)``.
        metadata: class names and colours of both groups (see :func:`draw_panoptic_seg`).
        gt: ``(ids (H, W) int, segments_info)`` of the dataset dict, or ``None`` for
            [image | prediction].
        alpha: opacity of the segment colours.
        min_short_side: small images are upscaled to this short side before drawing.

    Returns:
        (H', W', 3) uint8 RGB picture.
    """
    visualizer = Visualizer(image, metadata, min_short_side=min_short_side)
    maps = [(_as_label_map(panoptic_seg[0]), list(panoptic_seg[1]))]
    titles = ["image", _panoptic_title("prediction", maps[0][1])]
    if gt is not None:
        maps.append((_as_label_map(gt[0]), list(gt[1])))
        titles.append(_panoptic_title("ground truth", maps[1][1]))
    panels = [visualizer.img]
    for ids, segments_info in maps:
        panels.append(_draw_segments(visualizer, ids, segments_info, alpha=alpha))
    picture = draw_side_by_side(panels, titles)
    entries = _panoptic_legend_entries(maps, metadata)
    if not entries:
        return picture
    legend = draw_legend(entries, visualizer.style, max_width=picture.shape[1])
    legend = _pad_to(legend, legend.shape[0], picture.shape[1])
    return np.concatenate([picture, legend], axis=0)
