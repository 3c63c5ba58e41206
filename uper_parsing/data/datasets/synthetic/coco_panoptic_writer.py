"""The synthetic scenes in the COCO panoptic format (format "coco_panoptic").

``CocoPanopticSceneWriter`` writes under ``<set>/coco_panoptic/``::

    images/{train,val}/<stem>.jpg
    panoptic_{train,val}/<stem>.png            RGB-encoded segment ids (R + 256 G + 256^2 B)
    panoptic_{train,val}.json                  images, annotations (segments_info), categories
    panoptic_semseg_{train,val}/<stem>.png     Panoptic FPN semantic maps (uint8)

Category ids are the record's class ids (``i + 1`` = ``SYNTHETIC_CLASSES[i]``). Each stuff class
present is one segment with id = its category id; each visible thing instance is one segment with
id ``1000 * category id + instance id``. Unlabelled pixels (class 0) are void (id 0).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ...panoptic_utils import id2rgb, panoptic_semantic
from ..coco_panoptic import panoptic_metadata
from .record import SceneRecord
from .spec import SYNTHETIC_CLASSES
from .writers import SCENE_WRITERS, SceneWriter

__all__ = [
    "PANOPTIC_SUBDIR",
    "CocoPanopticSceneWriter",
    "scene_segments",
    "synthetic_panoptic_categories",
]

PANOPTIC_SUBDIR = "coco_panoptic"
_THING_ID_BASE = 1000  # thing segment id = 1000 * category id + instance id


def synthetic_panoptic_categories() -> list[dict[str, Any]]:
    """COCO panoptic categories of the synthetic classes (from the spec; no disk).

    Returns:
        ``[{"id": i + 1, "name", "isthing": 1 for things / 0 for stuff, "color": [R, G, B]}]``.
    """
    return [
        {"id": i + 1, "name": c.name, "isthing": int(c.kind == "thing"), "color": list(c.vis_color)}
        for i, c in enumerate(SYNTHETIC_CLASSES)
    ]


def _bbox(mask: np.ndarray) -> list[int]:
    """Tight XYWH box (integer pixels) of a non-empty (H, W) bool mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def scene_segments(record: SceneRecord) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The panoptic segmentation of a record.

    Returns:
        ids: ndarray (H, W) int64 segment ids (0 = void).
        segments_info: ``[{"id", "category_id" (dataset id = class id), "iscrowd": 0, "area",
        "bbox" (XYWH)}]``, stuff classes in class order, then things by instance id.

    Raises:
        ValueError: a thing-class pixel has no instance, or an instance id is too large.
    """
    ids = np.zeros(record.object.shape, np.int64)
    segments = []

    def add(segment_id: int, category_id: int, mask: np.ndarray) -> None:
        ids[mask] = segment_id
        area, bbox = int(mask.sum()), _bbox(mask)
        segments.append(
            {"id": segment_id, "category_id": category_id, "iscrowd": 0, "area": area, "bbox": bbox}
        )

    for i, spec in enumerate(SYNTHETIC_CLASSES):
        mask = record.object == i + 1
        if spec.kind == "stuff" and mask.any():
            add(i + 1, i + 1, mask)
    for inst in record.instances:
        if not 0 < inst.id < _THING_ID_BASE:
            raise ValueError(f"Instance id {inst.id} outside 1..{_THING_ID_BASE - 1}")
        add(_THING_ID_BASE * inst.class_id + inst.id, inst.class_id, record.instance == inst.id)
    if (record.object.astype(bool) & (ids == 0)).any():
        raise ValueError("Some labelled pixels of the record (thing classes) have no instance id")
    return ids, segments


class CocoPanopticSceneWriter(SceneWriter):
    """Writes the COCO panoptic layout of the module docstring under ``<root>/coco_panoptic``."""

    def __init__(self, root: str | Path, *, jpeg_quality: int = 92, seed: int = 0) -> None:
        super().__init__(Path(root) / PANOPTIC_SUBDIR, jpeg_quality=jpeg_quality, seed=seed)
        self._categories = synthetic_panoptic_categories()
        meta = panoptic_metadata(self._categories, where="synthetic scenes")
        self._thing_ids = meta["thing_dataset_id_to_contiguous_id"]
        self._stuff_ids = meta["stuff_dataset_id_to_contiguous_id"]
        self._images: dict[str, list[dict]] = {}
        self._annotations: dict[str, list[dict]] = {}

    def _contiguous(self, segments: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Segments with ``isthing`` and contiguous category ids, as in dataset dicts."""
        out = []
        for s in segments:
            isthing = s["category_id"] in self._thing_ids
            table = self._thing_ids if isthing else self._stuff_ids
            out.append({**s, "isthing": isthing, "category_id": table[s["category_id"]]})
        return out

    def write(self, record: SceneRecord, split: str, stem: str) -> None:
        self._write_jpeg(self.root / "images" / split / f"{stem}.jpg", record)
        ids, segments = scene_segments(record)
        png = f"{stem}.png"
        _write_png(
            self.root / f"panoptic_{split}" / png, cv2.cvtColor(id2rgb(ids), cv2.COLOR_RGB2BGR)
        )
        semantic = panoptic_semantic(ids, self._contiguous(segments))
        _write_png(self.root / f"panoptic_semseg_{split}" / png, semantic)
        images = self._images.setdefault(split, [])
        image_id = len(images) + 1
        size = {"height": record.height, "width": record.width}
        images.append({"id": image_id, "file_name": f"{stem}.jpg", **size})
        self._annotations.setdefault(split, []).append(
            {"image_id": image_id, "file_name": png, "segments_info": segments}
        )

    def finish(self, split: str) -> None:
        data = {
            "images": self._images.get(split, []),
            "annotations": self._annotations.get(split, []),
            "categories": self._categories,
        }
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"panoptic_{split}.json", "w") as f:
            json.dump(data, f)


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), array):
        raise OSError(f"Could not write {path}")


SCENE_WRITERS["coco_panoptic"] = CocoPanopticSceneWriter
