"""Helpers shared by the data tests."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np


def write_pair(root: Path, stem: str, image: np.ndarray, label: np.ndarray, image_ext=".png"):
    """Write ``root/images/<stem><ext>`` (RGB) and ``root/labels/<stem>.png``."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "images" / f"{stem}{image_ext}"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(root / "labels" / f"{stem}.png"), label)


PALETTE = np.array(
    [(230, 25, 25), (25, 230, 25), (25, 25, 230), (230, 230, 25), (25, 230, 230), (230, 25, 230)],
    np.uint8,
)


def block_label(hw: tuple[int, int], block: int, num_classes: int, seed: int = 0) -> np.ndarray:
    """(H, W) uint8 label of random classes in ``block`` x ``block`` squares."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, num_classes, (hw[0] // block + 1, hw[1] // block + 1), dtype=np.uint8)
    return np.kron(grid, np.ones((block, block), np.uint8))[: hw[0], : hw[1]]


def image_from_label(label: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB image whose colour is ``PALETTE[label]`` (black on other values)."""
    image = np.zeros((*label.shape, 3), np.uint8)
    known = label < len(PALETTE)
    image[known] = PALETTE[label[known]]
    return image


def assert_aligned(image: np.ndarray, label: np.ndarray, tol: int = 6, margin: int = 2) -> int:
    """Check that ``image`` (H, W, 3) is ``PALETTE[label]`` away from label boundaries (pixels
    within ``margin`` of another class are skipped). Returns the number of pixels checked."""
    checked = 0
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    for c in range(len(PALETTE)):
        inner = cv2.erode((label == c).astype(np.uint8), kernel, borderType=cv2.BORDER_REPLICATE)
        inner = inner.astype(bool)
        diff = np.abs(image[inner].astype(int) - PALETTE[c].astype(int))
        assert diff.size == 0 or diff.max() <= tol, f"class {c}: image differs by {diff.max()}"
        checked += int(inner.sum())
    return checked


def truncate(path: Path, keep: float = 0.9) -> None:
    """Cut a file to ``keep`` of its bytes, as a partly copied or downloaded file is."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


SEM_SEG_CLASSES = {"stuff_classes": ["a", "b", "c"], "ignore_label": 255}  # of write_sem_seg_set


def write_sem_seg_set(root: Path, stems, hw=(24, 32), num_classes: int = 3) -> Path:
    """``root/images/<stem>.jpg`` + ``root/labels/<stem>.png``: block labels of ``num_classes``
    classes and images coloured by them."""
    for i, stem in enumerate(stems):
        label = block_label(hw, 8, num_classes, seed=i)
        write_pair(root, stem, image_from_label(label), label, image_ext=".jpg")
    return root


PANOPTIC_CATEGORIES = [
    {"id": 1, "name": "box", "isthing": 1, "color": [220, 20, 60]},
    {"id": 2, "name": "floor", "isthing": 0, "color": [90, 90, 90]},
]


def write_panoptic_set(root: Path, stems, hw=(24, 32)) -> Path:
    """A COCO panoptic set: ``root/images/<stem>.jpg``, ``root/panoptic/<stem>.png`` (a box,
    segment 1, on the floor, segment 2) and ``root/panoptic.json`` (image ids 1, 2, ... in
    ``stems`` order); returns the JSON path."""
    from uper_parsing.data import id2rgb

    for sub in ("images", "panoptic"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = np.full(hw, 2)
    ids[4:12, 4:12] = 1
    segments = [
        {"id": 1, "category_id": 1, "iscrowd": 0, "area": 64, "bbox": [4, 4, 8, 8]},
        {
            "id": 2,
            "category_id": 2,
            "iscrowd": 0,
            "area": ids.size - 64,
            "bbox": [0, 0, hw[1], hw[0]],
        },
    ]
    data = {"images": [], "annotations": [], "categories": PANOPTIC_CATEGORIES}
    for i, stem in enumerate(stems, start=1):
        cv2.imwrite(str(root / "panoptic" / f"{stem}.png"), id2rgb(ids)[..., ::-1])
        cv2.imwrite(
            str(root / "images" / f"{stem}.jpg"), image_from_label((ids == 1).astype(np.uint8))
        )
        data["images"].append(
            {"id": i, "file_name": f"{stem}.jpg", "height": hw[0], "width": hw[1]}
        )
        data["annotations"].append(
            {"image_id": i, "file_name": f"{stem}.png", "segments_info": segments}
        )
    json_file = root / "panoptic.json"
    json_file.write_text(json.dumps(data))
    return json_file
