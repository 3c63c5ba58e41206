"""How every picture is laid out: titled panels in a row, legends, lines of notes (``compose``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .colormap import INK_RGB, PANEL_RGB
from .text import Style

__all__ = ["LegendEntry", "Panel", "compose", "draw_legend", "pad_to"]

_TITLE_SCALE = 1.15  # titles and notes are this much larger than names
_NOTE_RULE_RGB = (200, 200, 200)  # the hairline between the panels and the notes


@dataclass(frozen=True)
class LegendEntry:
    """One legend row: a swatch of ``color`` (RGB), ``name``, and ``share`` of the pixels in
    [0, 1] shown as a percentage (``None``: no percentage)."""

    name: str
    color: tuple[int, int, int]
    share: float | None = None


@dataclass(frozen=True)
class Panel:
    """One picture of a row: ``image`` (H, W, 3) uint8 RGB under ``title`` ("" for none), with
    its own ``legend`` below it (cut to its width)."""

    title: str
    image: np.ndarray
    legend: Sequence[LegendEntry] = ()


def pad_to(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Extend ``img`` (h, w, 3) with panel colour to at least (height, width)."""
    out = np.empty((max(height, img.shape[0]), max(width, img.shape[1]), 3), np.uint8)
    out[:] = PANEL_RGB
    out[: img.shape[0], : img.shape[1]] = img
    return out


def _blank(height: int, width: int) -> np.ndarray:
    return pad_to(np.zeros((0, 0, 3), np.uint8), height, width)


def draw_legend(
    entries: Sequence[LegendEntry],
    style: Style,
    *,
    max_height: int | None = None,
    max_width: int | None = None,
) -> np.ndarray:
    """A legend panel: one colour swatch + "name  12.3%" per entry, in a grid.

    Args:
        entries: the rows, in display order (at least one).
        style: sizes.
        max_height: fill columns top to bottom, as many rows as fit this height.
        max_width: fill rows left to right, as many columns as fit this width.

    Returns:
        (h, w, 3) uint8 RGB panel.
    """
    pad = style.pad
    shares = ["" if e.share is None else f"{100 * e.share:.1f}%" for e in entries]
    name_w = max(style.text_size(e.name)[0] for e in entries)
    share_w = max(style.text_size(s)[0] for s in shares)
    swatch = style.text_size("Ag")[1]
    row_h = swatch + pad
    share_gap = 4 * pad if share_w else 0
    cell_w = swatch + pad + name_w + share_gap + share_w + 3 * pad
    margin = 2 * pad  # around the grid; rows and cells already end with a gap of ``pad``
    count = len(entries)
    if max_height is not None:
        rows = max(1, (max_height - 2 * margin + pad) // row_h)
        cols = math.ceil(count / rows)
        rows = math.ceil(count / cols)
        position = [(i % rows, i // rows) for i in range(count)]
    else:
        cols = max(1, min(count, ((max_width or cell_w) - 2 * margin + pad) // cell_w))
        rows = math.ceil(count / cols)
        position = [(i // cols, i % cols) for i in range(count)]
    panel = _blank(2 * margin - pad + rows * row_h, 2 * margin - pad + cols * cell_w)
    for (row, col), entry, share in zip(position, entries, shares):
        x, y = margin + col * cell_w, margin + row * row_h
        cv2.rectangle(panel, (x, y), (x + swatch - 1, y + swatch - 1), entry.color, thickness=-1)
        cv2.rectangle(panel, (x, y), (x + swatch - 1, y + swatch - 1), INK_RGB, thickness=1)
        text_x = x + swatch + pad
        style.put_text(panel, entry.name, (text_x, y), INK_RGB)
        if share:
            share_x = text_x + name_w + share_gap + share_w - style.text_size(share)[0]
            style.put_text(panel, share, (share_x, y), INK_RGB)
    return panel


def _column(panel: Panel, style: Style, title_h: int) -> np.ndarray:
    """The panel's title (centred), its image, and its own legend below."""
    width = panel.image.shape[1]
    parts = []
    if title_h:
        title = _blank(title_h, width)
        text_w = style.text_size(panel.title, _TITLE_SCALE)[0]
        origin = (max(0, (width - text_w) // 2), style.pad)
        style.put_text(title, panel.title, origin, INK_RGB, _TITLE_SCALE)
        parts.append(title)
    parts.append(panel.image)
    if panel.legend:
        legend = draw_legend(panel.legend, style, max_width=width)
        parts.append(pad_to(legend[:, :width], legend.shape[0], width))
    return np.concatenate(parts, axis=0)


def _row(panels: Sequence[Panel], style: Style) -> np.ndarray:
    """The panels side by side, top-aligned, ``2 * pad`` apart."""
    titled = any(p.title for p in panels)
    title_h = style.text_size("Ag", _TITLE_SCALE)[1] + 2 * style.pad if titled else 0
    columns = [_column(p, style, title_h) for p in panels]
    height = max(c.shape[0] for c in columns)
    row = []
    for column in columns:
        row += [pad_to(column, height, 0), _blank(height, 2 * style.pad)]
    return np.concatenate(row[:-1], axis=1)


def _notes(lines: Sequence[str], style: Style, width: int) -> np.ndarray:
    """Lines of text on the panel colour, under a hairline."""
    row_h = style.text_size("Ag", _TITLE_SCALE)[1] + style.pad
    strip = _blank(2 * style.pad + len(lines) * row_h, width)
    for index, line in enumerate(lines):
        origin = (2 * style.pad, style.pad + index * row_h)
        style.put_text(strip, line, origin, INK_RGB, _TITLE_SCALE)
    strip[0, :] = _NOTE_RULE_RGB
    return strip


def compose(
    panels: Sequence[Panel],
    style: Style,
    legend: Sequence[LegendEntry] = (),
    notes: Sequence[str] = (),
) -> np.ndarray:
    """One picture: the panels in a row (titles above, each one's legend below), the shared
    ``legend`` to the right of the row when the row is at most twice as wide as tall, else below
    it, then the ``notes``, one line each.

    Returns:
        (H, W, 3) uint8 RGB.

    Raises:
        ValueError: no panel, or a panel that is not (H, W, 3) uint8.
    """
    if not panels:
        raise ValueError("compose needs at least one panel")
    for panel in panels:
        if panel.image.ndim != 3 or panel.image.shape[2] != 3 or panel.image.dtype != np.uint8:
            raise ValueError(
                f"Panel '{panel.title}' must be an (H, W, 3) uint8 image, got "
                f"{panel.image.shape} {panel.image.dtype}"
            )
    picture = _row(panels, style)
    height, width = picture.shape[:2]
    if legend and width > 2 * height:
        picture = _stack(picture, draw_legend(legend, style, max_width=width), axis=0)
    elif legend:
        picture = _stack(picture, draw_legend(legend, style, max_height=height), axis=1)
    if notes:
        picture = _stack(picture, _notes(notes, style, picture.shape[1]), axis=0)
    return picture


def _stack(first: np.ndarray, second: np.ndarray, axis: int) -> np.ndarray:
    """``second`` below (axis 0) or right of (axis 1) ``first``, both padded with panel colour
    to the same width (height)."""
    size = max(first.shape[1 - axis], second.shape[1 - axis])
    shape = (0, size) if axis == 0 else (size, 0)
    return np.concatenate([pad_to(first, *shape), pad_to(second, *shape)], axis=axis)
