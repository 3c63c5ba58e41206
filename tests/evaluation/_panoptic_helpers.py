"""A hand-made two-image COCO-panoptic dataset and the "model outputs" of the panoptic tests.

Categories (dataset ids deliberately not contiguous): things person (1) -> 0, car (3) -> 1;
stuff sky (7) -> 0, grass (9) -> 1.

Image 1, "a.jpg", 8 x 8::

    rows 0-1            sky     segment 5
    rows 2-5, cols 0-3  person  segment 300    (16 px, box XYWH [0, 2, 4, 4])
    rows 2-5, cols 4-7  void
    rows 6-7            grass   segment 70000  (id needs all three RGB bytes)

Image 2, "b.jpg", 6 x 10::

    rows 0-1            sky     segment 1
    rows 2-5, cols 0-3  car     segment 2
    rows 2-5, cols 4-5  grass   segment 3
    rows 2-5, cols 6-9  person  segment 4, iscrowd 1
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from uper_parsing.data import DatasetCatalog, MetadataCatalog
from uper_parsing.data.datasets.coco_panoptic import register_coco_panoptic
from uper_parsing.data.panoptic_utils import (
    id2rgb,
    panoptic_instances,
    read_panoptic,
    read_panoptic_semantic,
)

CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1, "color": [220, 20, 60]},
    {"id": 3, "name": "car", "isthing": 1, "color": [0, 0, 142]},
    {"id": 7, "name": "sky", "isthing": 0, "color": [70, 130, 180]},
    {"id": 9, "name": "grass", "isthing": 0, "color": [107, 142, 35]},
]


def _image_a() -> tuple[np.ndarray, dict[int, tuple[int, int]]]:
    ids = np.zeros((8, 8), dtype=np.int64)
    ids[0:2] = 5
    ids[2:6, 0:4] = 300
    ids[6:8] = 70000
    return ids, {5: (7, 0), 300: (1, 0), 70000: (9, 0)}  # id: (dataset category, iscrowd)


def _image_b() -> tuple[np.ndarray, dict[int, tuple[int, int]]]:
    ids = np.zeros((6, 10), dtype=np.int64)
    ids[0:2] = 1
    ids[2:6, 0:4] = 2
    ids[2:6, 4:6] = 3
    ids[2:6, 6:10] = 4
    return ids, {1: (7, 0), 2: (3, 0), 3: (9, 0), 4: (1, 1)}


def write_png(path: Path, ids: np.ndarray) -> None:
    """An RGB-encoded panoptic PNG of (H, W) segment ids."""
    Image.fromarray(id2rgb(ids)).save(path)


def _segment(ids: np.ndarray, seg_id: int, category: int, iscrowd: int) -> dict[str, Any]:
    rows, cols = np.nonzero(ids == seg_id)
    box = [int(cols.min()), int(rows.min()), int(np.ptp(cols)) + 1, int(np.ptp(rows)) + 1]
    return {
        "id": seg_id,
        "category_id": category,
        "iscrowd": iscrowd,
        "area": int(rows.size),
        "bbox": box,
    }


def make_dataset(root: Path, name: str, **extra_metadata: Any) -> list[dict[str, Any]]:
    """Write the two images' PNGs and panoptic JSON under ``root``, register them as ``name``
    and return the dataset dicts (which double as model inputs)."""
    pan_root = root / "panoptic"
    pan_root.mkdir(parents=True)
    (root / "images").mkdir()
    images, annotations = [], []
    for image_id, (stem, (ids, segments)) in enumerate(
        [("a", _image_a()), ("b", _image_b())], start=1
    ):
        write_png(pan_root / f"{stem}.png", ids)
        images.append(
            {
                "id": image_id,
                "file_name": f"{stem}.jpg",
                "height": ids.shape[0],
                "width": ids.shape[1],
            }
        )
        annotations.append(
            {
                "image_id": image_id,
                "file_name": f"{stem}.png",
                "segments_info": [_segment(ids, s, c, crowd) for s, (c, crowd) in segments.items()],
            }
        )
    json_file = root / "panoptic.json"
    json_file.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES})
    )
    register_coco_panoptic(
        name,
        {"categories": CATEGORIES, **extra_metadata},
        image_root=str(root / "images"),
        panoptic_root=str(pan_root),
        panoptic_json=str(json_file),
    )
    return DatasetCatalog.get(name)


def one_hot(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """(K, H, W) float scores whose argmax is ``labels`` (values >= K become class 0)."""
    labels = np.where(labels < num_classes, labels, 0)
    return torch.from_numpy(np.eye(num_classes, dtype=np.float32)[labels].transpose(2, 0, 1))


def ground_truth_outputs(dataset_dicts: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """Model outputs equal to the ground truth: every segment (the crowd as a plain person),
    the non-crowd things as instances with score 1, the semantic map as one-hot scores."""
    metadata = MetadataCatalog.get(name)
    outputs = []
    for d in dataset_dicts:
        ids = read_panoptic(d)
        segments = [
            {"id": s["id"], "isthing": s["isthing"], "category_id": s["category_id"]}
            for s in d["segments_info"]
        ]
        targets = panoptic_instances(ids, d["segments_info"])
        instances = {
            "boxes": torch.from_numpy(targets["boxes"]),
            "labels": torch.from_numpy(targets["labels"]),
            "scores": torch.ones(len(targets["labels"])),
            "masks": torch.from_numpy(targets["masks"]).bool(),
        }
        semantic = read_panoptic_semantic(d, metadata)
        outputs.append(
            {
                "panoptic_seg": (torch.from_numpy(ids.astype(np.int32)), segments),
                "instances": instances,
                "sem_seg": one_hot(semantic, 1 + len(metadata.stuff_classes)),
            }
        )
    return outputs
