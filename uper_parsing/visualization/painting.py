"""What is painted over an image: blended label colours, outlines, instance boxes and name boxes.

Every function works on (H, W, 3) uint8 RGB canvases at the picture's output size.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .colormap import INK_RGB, contrast_text_color, darken
from .regions import Region
from .text import Style

__all__ = ["Box", "blend", "draw_boxes", "draw_edges", "draw_names", "tight_box"]

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), x1 / y1 exclusive

# Where else a name box may go, in box widths / heights from the region's interior point.
_NAME_OFFSETS = sorted(
    ((dx, dy) for dx in (-1.0, -0.5, 0.0, 0.5, 1.0) for dy in (-2, -1, 0, 1, 2)),
    key=lambda d: d[0] ** 2 + d[1] ** 2,
)


def blend(
    img: np.ndarray, labels: np.ndarray, valid: np.ndarray, palette: np.ndarray, alpha: float
) -> np.ndarray:
    """``img`` (H, W, 3) with ``palette[labels]`` blended in at opacity ``alpha`` where ``valid``
    (H, W) bool; elsewhere the image unchanged."""
    colors = palette[np.where(valid, labels, 0)].astype(np.float32)
    blended = img.astype(np.float32) * (1.0 - alpha) + colors * alpha
    blended = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    return np.where(valid[..., None], blended, img)


def draw_edges(
    canvas: np.ndarray, labels: np.ndarray, valid: np.ndarray, palette: np.ndarray, width: int
) -> None:
    """Paint pixels within ``width`` of a different label (both sides of every boundary) in the
    darkened colour of their own label."""
    kernel = np.ones((2 * width + 1,) * 2, np.uint8)
    # Shift to >= 0 and fit float32 exactly so that dilate / erode compare true ids.
    shifted = (labels - labels.min()).astype(np.float32)
    edges = (cv2.dilate(shifted, kernel) != cv2.erode(shifted, kernel)) & valid
    canvas[edges] = darken(palette)[labels[edges]]


def tight_box(mask: np.ndarray) -> Box:
    """The tight box (x0, y0, x1, y1) of the non-zero pixels of a non-empty (H, W) mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def draw_boxes(
    canvas: np.ndarray, boxes: Sequence[Box], colors: Sequence[np.ndarray], width: int
) -> None:
    """Outline each box in its darkened colour, ``width`` pixels thick, on the pixels inside it
    (so a box never covers a pixel outside its object's extent)."""
    for (x0, y0, x1, y1), color in zip(boxes, colors):
        ink = darken(np.asarray(color, np.uint8))
        w = min(width, max(1, (x1 - x0) // 2), max(1, (y1 - y0) // 2))
        canvas[y0 : y0 + w, x0:x1] = ink
        canvas[y1 - w : y1, x0:x1] = ink
        canvas[y0:y1, x0 : x0 + w] = ink
        canvas[y0:y1, x1 - w : x1] = ink


def draw_names(
    canvas: np.ndarray,
    regions: Sequence[Region],
    names: Sequence[str],
    colors: np.ndarray,
    style: Style,
) -> None:
    """A name box per region (``names[region.label]`` on ``colors[region.label]``), at its
    interior point or moved nearby (centre still inside the region) to clear the boxes already
    placed; a region with no free spot gets no name. Regions are taken in the order given
    (smallest first leaves the large ones room to move)."""
    placed: list[Box] = []
    for region in regions:
        name = names[region.label]
        box = _free_name_box(name, region, placed, canvas.shape, style)
        if box is not None:
            placed.append(box)
            _draw_name(canvas, name, box, colors[region.label], style)


def _free_name_box(
    name: str, region: Region, placed: list[Box], shape: tuple[int, ...], style: Style
) -> Box | None:
    box = _name_box(name, region.point, shape, style)
    box_w, box_h = box[2] - box[0], box[3] - box[1]
    for dx, dy in _NAME_OFFSETS:
        x = region.point[0] + round(dx * box_w)
        y = region.point[1] + round(dy * box_h)
        if (dx, dy) != (0, 0) and not region.contains(x, y):
            continue
        box = _name_box(name, (x, y), shape, style)
        if not any(_overlaps(box, other) for other in placed):
            return box
    return None


def _name_box(text: str, center: tuple[int, int], shape: tuple[int, ...], style: Style) -> Box:
    """(x0, y0, x1, y1) of the text box centred at ``center``, kept inside the picture."""
    width, height = style.text_size(text)
    pad = style.pad // 2 + 1
    box_w, box_h = width + 2 * pad, height + 2 * pad
    x0 = int(np.clip(center[0] - box_w // 2, 0, max(0, shape[1] - box_w)))
    y0 = int(np.clip(center[1] - box_h // 2, 0, max(0, shape[0] - box_h)))
    return x0, y0, x0 + box_w, y0 + box_h


def _draw_name(canvas: np.ndarray, text: str, box: Box, color: np.ndarray, style: Style) -> None:
    """``text`` on a box of ``color`` with a dark outline: legible on any colour."""
    x0, y0, x1, y1 = box
    fill = tuple(int(c) for c in color)
    cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), fill, thickness=-1)
    cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), INK_RGB, thickness=1)
    pad = style.pad // 2 + 1
    style.put_text(canvas, text, (x0 + pad, y0 + pad), contrast_text_color(fill))


def _overlaps(a: Box, b: Box, margin: int = 2) -> bool:
    """Whether boxes (x0, y0, x1, y1) come closer than ``margin`` pixels."""
    return (
        a[0] < b[2] + margin
        and b[0] < a[2] + margin
        and a[1] < b[3] + margin
        and b[1] < a[3] + margin
    )
