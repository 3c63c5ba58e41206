"""Pictures of semantic label maps, drawn with OpenCV and NumPy only (RGB uint8 throughout).

Small images are upscaled before anything is drawn (labels with nearest-neighbour), so that class
names, contours and the legend stay legible on 128-pixel inputs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from .colormap import contrast_text_color, palette_for

__all__ = [
    "VisImage",
    "Visualizer",
    "draw_legend",
    "draw_side_by_side",
    "visualize_sem_seg_prediction",
]

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_PANEL_RGB = (255, 255, 255)
_INK_RGB = (30, 30, 30)
# Region boundaries are drawn in the class colour scaled by this factor.
_EDGE_DARKEN = 0.55


@dataclass(frozen=True)
class _Style:
    """Sizes that scale with the picture: font, strokes, paddings (all in output pixels)."""

    font_scale: float
    thickness: int
    edge_width: int
    pad: int

    @classmethod
    def for_short_side(cls, short_side: int) -> _Style:
        font_scale = float(np.clip(short_side / 800.0, 0.5, 1.2))
        return cls(
            font_scale=font_scale,
            thickness=1 if font_scale < 0.75 else 2,
            edge_width=max(1, round(short_side / 400)),
            pad=max(3, round(6 * font_scale)),
        )

    def text_size(self, text: str, scale: float = 1.0) -> tuple[int, int, int]:
        """(width, height above the baseline, baseline) of ``text`` in pixels."""
        (width, height), baseline = cv2.getTextSize(
            text, _FONT, self.font_scale * scale, self.thickness
        )
        return width, height, baseline

    def put_text(
        self,
        img: np.ndarray,
        text: str,
        origin: tuple[int, int],
        color: tuple[int, int, int],
        scale: float = 1.0,
    ) -> None:
        """Draw ``text`` with its baseline starting at ``origin`` (x, y)."""
        cv2.putText(
            img, text, origin, _FONT, self.font_scale * scale, color, self.thickness, cv2.LINE_AA
        )


class VisImage:
    """A drawn picture: (H, W, 3) uint8 RGB."""

    def __init__(self, img: np.ndarray) -> None:
        self._img = img

    @property
    def height(self) -> int:
        return self._img.shape[0]

    @property
    def width(self) -> int:
        return self._img.shape[1]

    def get_image(self) -> np.ndarray:
        """The picture, (H, W, 3) uint8 RGB."""
        return self._img

    def save(self, path: str) -> None:
        """Write the picture to ``path`` (format from the extension), creating its folder."""
        save_image(self._img, path)


def save_image(img_rgb: np.ndarray, path: str) -> None:
    """Write an (H, W, 3) uint8 RGB picture with OpenCV, creating the folder."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    if not cv2.imwrite(path, cv2.cvtColor(img_rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"Could not write a picture to {path}")


def _as_rgb_uint8(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"Expected an (H, W, 3) RGB image, got shape {img.shape}")
    if img.dtype != np.uint8:
        raise ValueError(f"Expected a uint8 image, got {img.dtype}")
    return np.ascontiguousarray(img)


def _as_label_map(labels: np.ndarray | torch.Tensor) -> np.ndarray:
    """(H, W) int64 from a label map ((H, W) or (1, H, W) ints) or (K, H, W) float scores."""
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().to("cpu")
        labels = (labels.float() if labels.is_floating_point() else labels).numpy()
    labels = np.asarray(labels)
    if labels.ndim == 3 and np.issubdtype(labels.dtype, np.floating):
        labels = labels.argmax(axis=0)
    elif labels.ndim == 3 and labels.shape[0] == 1:
        labels = labels[0]
    if labels.ndim != 2:
        raise ValueError(
            f"Expected an (H, W) label map or (K, H, W) float scores, got {labels.shape} "
            f"of {labels.dtype}"
        )
    return labels.astype(np.int64)


def _resize_labels(labels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if labels.shape == hw:
        return labels
    return cv2.resize(
        labels.astype(np.int32), (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST
    ).astype(np.int64)


@dataclass
class _Region:
    class_id: int
    area: int
    point: tuple[int, int]  # (x, y) far from the region's boundary
    origin: tuple[int, int]  # (x, y) of the bounding box of the region
    mask: np.ndarray  # (h, w) uint8, the region inside its bounding box

    def contains(self, x: int, y: int) -> bool:
        x, y = x - self.origin[0], y - self.origin[1]
        return 0 <= y < self.mask.shape[0] and 0 <= x < self.mask.shape[1] and self.mask[y, x] > 0


# Where else a name box may go, in box widths / heights from the region's interior point.
_NAME_OFFSETS = sorted(
    ((dx, dy) for dx in (-1.0, -0.5, 0.0, 0.5, 1.0) for dy in (-2, -1, 0, 1, 2)),
    key=lambda d: d[0] ** 2 + d[1] ** 2,
)


class Visualizer:
    """Draws label maps over one image.

    Args:
        img_rgb: (H, W, 3) uint8 RGB image.
        metadata: anything with ``stuff_classes``, ``stuff_colors`` (RGB) and ``ignore_label``;
            missing attributes fall back to class ids, a generated palette and 255.
        scale: output size relative to the input.
        min_short_side: small images are upscaled so that the short side of the output is at least
            this many pixels (0 disables), which keeps text legible.
    """

    def __init__(
        self,
        img_rgb: np.ndarray,
        metadata: Any = None,
        *,
        scale: float = 1.0,
        min_short_side: int = 384,
    ) -> None:
        img = _as_rgb_uint8(img_rgb)
        height, width = img.shape[:2]
        if min_short_side > 0:
            scale = max(scale, min_short_side / min(height, width))
        self.metadata = metadata
        self.scale = scale
        self.input_hw = (height, width)
        self.output_hw = (max(1, round(height * scale)), max(1, round(width * scale)))
        if self.output_hw != self.input_hw:
            interpolation = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
            img = cv2.resize(img, self.output_hw[::-1], interpolation=interpolation)
        self.img = img
        self.style = _Style.for_short_side(min(self.output_hw))
        self.class_names: list[str] = [
            str(c) for c in getattr(metadata, "stuff_classes", None) or []
        ]
        self.ignore_label: int = getattr(metadata, "ignore_label", 255)
        self._stuff_colors = getattr(metadata, "stuff_colors", None)

    def palette(self, num_classes: int) -> np.ndarray:
        """(num_classes, 3) uint8 RGB: metadata colours, completed by a generated palette."""
        return palette_for(self._stuff_colors, max(num_classes, len(self.class_names), 1))

    def class_name(self, class_id: int) -> str:
        return self.class_names[class_id] if class_id < len(self.class_names) else str(class_id)

    def prepare_labels(self, sem_seg: np.ndarray | torch.Tensor) -> np.ndarray:
        """(H, W) labels at the input size -> (H', W') int64 labels at the output size."""
        labels = _as_label_map(sem_seg)
        if labels.shape != self.input_hw:
            raise ValueError(
                f"Label map is {labels.shape}, the image is {self.input_hw}; they must match."
            )
        return _resize_labels(labels, self.output_hw)

    def draw_sem_seg(
        self,
        sem_seg: np.ndarray | torch.Tensor,
        *,
        alpha: float = 0.6,
        area_threshold: int | None = None,
        show_legend: bool = True,
    ) -> VisImage:
        """Class colours blended over the image, region contours, names and a legend.

        Args:
            sem_seg: (H, W) int class ids at the image's size (or (K, H, W) scores); pixels equal
                to the ignore label are left as the image.
            alpha: opacity of the class colours.
            area_threshold: regions (connected components) smaller than this many input pixels
                get no name; default 0.5% of the image.
            show_legend: append a legend of the classes present, largest first; to the right,
                or below for wide pictures.
        """
        labels = self.prepare_labels(sem_seg)
        valid = (labels >= 0) & (labels != self.ignore_label)
        num_classes = int(labels[valid].max()) + 1 if valid.any() else 0
        palette = self.palette(num_classes)
        canvas = self._blend(labels, valid, palette, alpha)
        self._draw_edges(canvas, labels, valid, palette)
        if area_threshold is None:
            area_threshold = max(1, round(0.005 * self.input_hw[0] * self.input_hw[1]))
        min_area = area_threshold * self.scale * self.scale
        self._draw_region_names(canvas, self._regions(labels, valid, min_area), palette)
        if show_legend:
            entries = _legend_entries(labels[valid])
            canvas = self._attach_legend(canvas, entries, palette)
        return VisImage(canvas)

    def _blend(
        self, labels: np.ndarray, valid: np.ndarray, palette: np.ndarray, alpha: float
    ) -> np.ndarray:
        colors = palette[np.where(valid, labels, 0)].astype(np.float32)
        blended = self.img.astype(np.float32) * (1.0 - alpha) + colors * alpha
        blended = np.clip(np.round(blended), 0, 255).astype(np.uint8)
        return np.where(valid[..., None], blended, self.img)

    def _draw_edges(
        self, canvas: np.ndarray, labels: np.ndarray, valid: np.ndarray, palette: np.ndarray
    ) -> None:
        """Darken pixels next to a different label (both sides of every boundary)."""
        kernel = np.ones((2 * self.style.edge_width + 1,) * 2, np.uint8)
        # Shift to >= 0 and fit float32 exactly so that dilate / erode compare true ids.
        shifted = (labels - labels.min()).astype(np.float32)
        edges = (cv2.dilate(shifted, kernel) != cv2.erode(shifted, kernel)) & valid
        dark = (palette.astype(np.float32) * _EDGE_DARKEN).astype(np.uint8)
        canvas[edges] = dark[labels[edges]]

    def _regions(self, labels: np.ndarray, valid: np.ndarray, min_area: float) -> list[_Region]:
        """Connected regions of at least ``min_area`` output pixels, smallest first."""
        regions = []
        for class_id in np.unique(labels[valid]):
            mask = (labels == class_id).astype(np.uint8)
            count, components, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
            for index in range(1, count):
                if stats[index, cv2.CC_STAT_AREA] >= min_area:
                    regions.append(_component_region(int(class_id), components, stats, index))
        return sorted(regions, key=lambda r: r.area)

    def _segment_regions(self, index_map: np.ndarray, min_areas: np.ndarray) -> list[_Region]:
        """One region per segment of ``index_map`` (H', W') int64 (-1 = void): its largest
        connected part, for segments ``s`` of at least ``min_areas[s]`` output pixels in all;
        smallest first."""
        regions = []
        for segment in np.unique(index_map[index_map >= 0]):
            mask = (index_map == segment).astype(np.uint8)
            area = int(mask.sum())
            if area < min_areas[segment]:
                continue
            _, components, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
            largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
            region = _component_region(int(segment), components, stats, largest)
            region.area = area
            regions.append(region)
        return sorted(regions, key=lambda r: r.area)

    def _draw_region_names(
        self,
        canvas: np.ndarray,
        regions: list[_Region],
        palette: np.ndarray,
        names: Sequence[str] | None = None,
    ) -> None:
        """A name box per region, at its interior point or moved nearby (centre still inside the
        region) to clear boxes already placed; a region with no free spot gets no name.

        Small regions go first: large ones have more room to move. A region's text is
        ``names[label]`` when given, else the class name of its label.
        """
        placed: list[tuple[int, int, int, int]] = []
        for region in regions:
            label = region.class_id
            name = names[label] if names is not None else self.class_name(label)
            box = self._free_name_box(name, region, placed, canvas.shape)
            if box is not None:
                placed.append(box)
                self._draw_name(canvas, name, box, palette[region.class_id])

    def _free_name_box(
        self,
        name: str,
        region: _Region,
        placed: list[tuple[int, int, int, int]],
        shape: tuple[int, ...],
    ) -> tuple[int, int, int, int] | None:
        box = self._name_box(name, region.point, shape)
        box_w, box_h = box[2] - box[0], box[3] - box[1]
        for dx, dy in _NAME_OFFSETS:
            x = region.point[0] + round(dx * box_w)
            y = region.point[1] + round(dy * box_h)
            if (dx, dy) != (0, 0) and not region.contains(x, y):
                continue
            box = self._name_box(name, (x, y), shape)
            if not any(_overlaps(box, other) for other in placed):
                return box
        return None

    def _name_box(
        self, text: str, center: tuple[int, int], shape: tuple[int, ...]
    ) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the text box centred at ``center``, kept inside the picture."""
        width, height, baseline = self.style.text_size(text)
        pad = self.style.pad // 2 + 1
        box_w, box_h = width + 2 * pad, height + baseline + 2 * pad
        x0 = int(np.clip(center[0] - box_w // 2, 0, max(0, shape[1] - box_w)))
        y0 = int(np.clip(center[1] - box_h // 2, 0, max(0, shape[0] - box_h)))
        return x0, y0, x0 + box_w, y0 + box_h

    def _draw_name(
        self, canvas: np.ndarray, text: str, box: tuple[int, int, int, int], color: np.ndarray
    ) -> None:
        """Class name on a box of the class colour with a dark outline: legible on any colour."""
        x0, y0, x1, y1 = box
        fill = tuple(int(c) for c in color)
        cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), fill, thickness=-1)
        cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), _INK_RGB, thickness=1)
        _, height, baseline = self.style.text_size(text)
        pad = self.style.pad // 2 + 1
        self.style.put_text(canvas, text, (x0 + pad, y0 + pad + height), contrast_text_color(fill))

    def _attach_legend(
        self, canvas: np.ndarray, entries: list[tuple[int, int]], palette: np.ndarray
    ) -> np.ndarray:
        if not entries:
            return canvas
        height, width = canvas.shape[:2]
        names = [
            (self.class_name(c), tuple(int(v) for v in palette[c]), share) for c, share in entries
        ]
        if width > 2 * height:
            legend = draw_legend(names, self.style, max_width=width)
            legend = _pad_to(legend, legend.shape[0], width)
            return np.concatenate([canvas, legend], axis=0)
        legend = draw_legend(names, self.style, max_height=height)
        legend = _pad_to(legend, height, legend.shape[1])
        return np.concatenate([canvas, legend], axis=1)


def _component_region(label: int, components: np.ndarray, stats: np.ndarray, index: int) -> _Region:
    """The region of component ``index`` of ``cv2.connectedComponentsWithStats`` output."""
    x, y, w, h, area = (int(v) for v in stats[index])
    crop = (components[y : y + h, x : x + w] == index).astype(np.uint8)
    px, py = _interior_point(crop)
    return _Region(label, area, (x + px, y + py), (x, y), crop)


def _interior_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of a pixel of ``mask`` deep inside it (the picture edge counts as boundary).

    Among the pixels at least 80% as far from the boundary as the farthest one, the one closest to
    the region's centroid: central in long thin regions, still inside concave ones.
    """
    distance = cv2.distanceTransform(np.pad(mask, 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    ys, xs = np.nonzero(distance >= 0.8 * distance.max())
    cy, cx = np.nonzero(mask)
    nearest = np.argmin((ys - cy.mean()) ** 2 + (xs - cx.mean()) ** 2)
    return int(xs[nearest]), int(ys[nearest])


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int], margin: int = 2) -> bool:
    """Whether boxes (x0, y0, x1, y1) come closer than ``margin`` pixels."""
    return (
        a[0] < b[2] + margin
        and b[0] < a[2] + margin
        and a[1] < b[3] + margin
        and b[1] < a[3] + margin
    )


def _legend_entries(labels: np.ndarray) -> list[tuple[int, float]]:
    """[(class id, share of the pixels)] for the ids in ``labels``, largest first."""
    if labels.size == 0:
        return []
    ids, counts = np.unique(labels, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return [(int(ids[i]), float(counts[i]) / labels.size) for i in order]


def _pad_to(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Extend ``img`` with panel colour to at least (height, width)."""
    out = np.empty((max(height, img.shape[0]), max(width, img.shape[1]), 3), np.uint8)
    out[:] = _PANEL_RGB
    out[: img.shape[0], : img.shape[1]] = img
    return out


def draw_legend(
    entries: Sequence[tuple[str, tuple[int, int, int], float | None]],
    style: _Style,
    *,
    max_height: int | None = None,
    max_width: int | None = None,
) -> np.ndarray:
    """A legend panel: one colour swatch + "name  12.3%" per entry, in a grid.

    Args:
        entries: (name, RGB colour, share of pixels in [0, 1] or ``None`` to show no share), in
            display order.
        style: sizes (see ``Visualizer.style``).
        max_height: fill columns top to bottom, as many rows as fit this height.
        max_width: fill rows left to right, as many columns as fit this width.

    Returns:
        (h, w, 3) uint8 RGB panel.
    """
    pad = style.pad
    names = [name for name, _, _ in entries]
    shares = ["" if share is None else f"{100 * share:.1f}%" for _, _, share in entries]
    name_w = max(style.text_size(n)[0] for n in names)
    share_w = max(style.text_size(s)[0] for s in shares)
    _, text_h, baseline = style.text_size("Ag")
    swatch = text_h + baseline
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
    panel = np.empty(
        (2 * margin - pad + rows * row_h, 2 * margin - pad + cols * cell_w, 3), np.uint8
    )
    panel[:] = _PANEL_RGB
    for (row, col), (name, color, _), share in zip(position, entries, shares):
        x, y = margin + col * cell_w, margin + row * row_h
        cv2.rectangle(panel, (x, y), (x + swatch - 1, y + swatch - 1), color, thickness=-1)
        cv2.rectangle(panel, (x, y), (x + swatch - 1, y + swatch - 1), _INK_RGB, thickness=1)
        text_x = x + swatch + pad
        style.put_text(panel, name, (text_x, y + text_h), _INK_RGB)
        if share:
            share_x = text_x + name_w + share_gap + share_w - style.text_size(share)[0]
            style.put_text(panel, share, (share_x, y + text_h), _INK_RGB)
    return panel


def draw_side_by_side(
    panels: Sequence[np.ndarray], titles: Sequence[str], *, gap: int | None = None
) -> np.ndarray:
    """Panels in one row, each under a centred title; (H, W, 3) uint8 RGB.

    Panels of different heights are top-aligned on the panel background.
    """
    if len(panels) != len(titles):
        raise ValueError(f"{len(panels)} panels but {len(titles)} titles")
    style = _Style.for_short_side(min(min(p.shape[:2]) for p in panels))
    gap = style.pad * 2 if gap is None else gap
    _, text_h, baseline = style.text_size("Ag", scale=1.15)
    title_h = text_h + baseline + 2 * style.pad
    height = max(p.shape[0] for p in panels)
    columns = []
    for panel, title in zip(panels, titles):
        column = _pad_to(np.zeros((0, panel.shape[1], 3), np.uint8), title_h + height, 0)
        column[title_h : title_h + panel.shape[0]] = panel
        text_w = style.text_size(title, scale=1.15)[0]
        x = max(0, (panel.shape[1] - text_w) // 2)
        style.put_text(column, title, (x, style.pad + text_h), _INK_RGB, scale=1.15)
        columns.append(column)
        columns.append(_pad_to(np.zeros((0, 0, 3), np.uint8), title_h + height, gap))
    return np.concatenate(columns[:-1], axis=1)


def visualize_sem_seg_prediction(
    image: np.ndarray,
    prediction: np.ndarray | torch.Tensor,
    metadata: Any,
    gt: np.ndarray | torch.Tensor | None = None,
    *,
    alpha: float = 0.6,
    min_short_side: int = 384,
) -> np.ndarray:
    """[image | prediction | ground truth] with titles and one legend below; (H, W, 3) uint8 RGB.

    Args:
        image: (H, W, 3) uint8 RGB at the size the prediction was returned at.
        prediction: (H, W) class ids or (K, H, W) scores.
        metadata: class names, colours and ignore label (see :class:`Visualizer`).
        gt: (H, W) ground-truth train ids, or ``None`` for [image | prediction].
        alpha: opacity of the class colours.
        min_short_side: small images are upscaled to this short side before drawing.
    """
    visualizer = Visualizer(image, metadata, min_short_side=min_short_side)
    pred = _as_label_map(prediction)
    maps = [pred] if gt is None else [pred, _as_label_map(gt)]
    panels = [visualizer.img]
    titles = ["image"]
    for labels in maps:
        drawn = visualizer.draw_sem_seg(labels, alpha=alpha, show_legend=False)
        panels.append(drawn.get_image())
    titles.append("prediction")
    if gt is not None:
        gt_labels = maps[1]
        scored = (gt_labels >= 0) & (gt_labels != visualizer.ignore_label)
        if scored.any():
            accuracy = 100 * float(np.mean(pred[scored] == gt_labels[scored]))
            titles[-1] = f"prediction ({accuracy:.1f}% px acc)"
        titles.append("ground truth")
    picture = draw_side_by_side(panels, titles)

    all_labels = np.concatenate([m.reshape(-1) for m in maps])
    all_labels = all_labels[(all_labels >= 0) & (all_labels != visualizer.ignore_label)]
    entries = _legend_entries(all_labels)
    if not entries:
        return picture
    palette = visualizer.palette(max(c for c, _ in entries) + 1)
    legend = draw_legend(
        [(visualizer.class_name(c), tuple(int(v) for v in palette[c]), None) for c, _ in entries],
        visualizer.style,
        max_width=picture.shape[1],
    )
    legend = _pad_to(legend, legend.shape[0], picture.shape[1])
    return np.concatenate([picture, legend], axis=0)
