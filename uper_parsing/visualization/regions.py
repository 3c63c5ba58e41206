"""Label maps as pictures see them: input checks, resizing, connected regions and their shares."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

__all__ = [
    "Region",
    "as_label_map",
    "as_rgb_uint8",
    "label_regions",
    "label_shares",
    "resize_labels",
    "segment_regions",
]


def as_rgb_uint8(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an (H, W, 3) or grey (H, W) uint8 image."""
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"Expected an (H, W, 3) RGB image, got shape {img.shape}")
    if img.dtype != np.uint8:
        raise ValueError(f"Expected a uint8 image, got {img.dtype}")
    return np.ascontiguousarray(img)


def as_label_map(labels: np.ndarray | torch.Tensor) -> np.ndarray:
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


def resize_labels(labels: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(H, W) int labels -> (hw) int64, nearest neighbour."""
    if labels.shape == hw:
        return labels.astype(np.int64)
    # cv2 resizes int32 exactly; larger ids (panoptic segment ids) stay below 2^31
    return cv2.resize(
        labels.astype(np.int32), (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST
    ).astype(np.int64)


def label_shares(labels: np.ndarray) -> list[tuple[int, float]]:
    """[(label, share of the pixels)] of the values of ``labels``, largest share first."""
    if labels.size == 0:
        return []
    ids, counts = np.unique(labels, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return [(int(ids[i]), float(counts[i]) / labels.size) for i in order]


@dataclass
class Region:
    """One connected region of a label (or segment) map, at the output size.

    Attributes:
        label: the class id or segment index it belongs to.
        area: its number of pixels.
        point: (x, y) of a pixel far from its boundary, where its name goes.
        origin: (x, y) of the top-left corner of its bounding box.
        mask: (h, w) uint8, the region inside its bounding box.
    """

    label: int
    area: int
    point: tuple[int, int]
    origin: tuple[int, int]
    mask: np.ndarray

    def contains(self, x: int, y: int) -> bool:
        x, y = x - self.origin[0], y - self.origin[1]
        return 0 <= y < self.mask.shape[0] and 0 <= x < self.mask.shape[1] and self.mask[y, x] > 0


def label_regions(labels: np.ndarray, valid: np.ndarray, min_area: float) -> list[Region]:
    """Connected regions (8-connected) of each label of ``labels`` (H, W) int64 where ``valid``,
    of at least ``min_area`` pixels; smallest first."""
    regions = []
    for label in np.unique(labels[valid]):
        mask = (labels == label).astype(np.uint8)
        count, components, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        for index in range(1, count):
            if stats[index, cv2.CC_STAT_AREA] >= min_area:
                regions.append(_component_region(int(label), components, stats, index))
    return sorted(regions, key=lambda r: r.area)


def segment_regions(index_map: np.ndarray, min_areas: np.ndarray) -> list[Region]:
    """One region per segment ``s`` of ``index_map`` (H, W) int64 (-1 = void) with at least
    ``min_areas[s]`` pixels in all: its largest connected part (``area`` counts all its pixels);
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


def _component_region(label: int, components: np.ndarray, stats: np.ndarray, index: int) -> Region:
    """The region of component ``index`` of ``cv2.connectedComponentsWithStats`` output."""
    x, y, w, h, area = (int(v) for v in stats[index])
    crop = (components[y : y + h, x : x + w] == index).astype(np.uint8)
    px, py = _interior_point(crop)
    return Region(label, area, (x + px, y + py), (x, y), crop)


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
