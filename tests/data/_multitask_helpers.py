"""Helpers of the multi-task data tests: a hand-written Broden folder and a tiny synthetic set."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from uper_parsing.data import DatasetCatalog, SyntheticParams, register_synthetic_multitask
from uper_parsing.data.datasets.synthetic import prepare_synthetic_scenes

MT_PREFIX = "synthetic_mt_tiny"
MT_PARAMS = SyntheticParams(
    seed=3, image_size=64, num_train=12, num_val=4, formats=("ade", "broden")
)

# Hand-written Broden folder: numbers above 255 exercise the R + 256 * G encoding.
LABELS = [
    (0, "-", ""),
    (3, "person", "object"),
    (300, "table", "object"),
    (7, "car", "object"),  # an object label that is not trained (not in c_object.csv)
    (12, "leg", "part"),
    (513, "head", "part"),
    (20, "wood", "material"),
    (21, "skin", "material"),
    (40, "kitchen", "scene"),
    (41, "street", "scene"),
    (60, "striped", "texture"),
]
C_FILES = {
    "object": [(1, 3, "person"), (2, 300, "table")],
    "part": [(1, 12, "leg"), (2, 513, "head")],
    "material": [(2, 21, "skin"), (1, 20, "wood")],  # ordered by code, not by row
    "scene": [(1, 40, "kitchen"), (2, 41, "street")],
    "texture": [(1, 60, "striped")],
}
HIERARCHY = [("person", "head"), ("person", "leg"), ("table", "leg")]


def write_csv(path: Path, columns: list[str], rows: list) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)


def write_numbers(path: Path, numbers: np.ndarray) -> None:
    """Label PNG with R + 256 * G = numbers."""
    bgr = np.zeros((*numbers.shape, 3), np.uint8)
    bgr[..., 2], bgr[..., 1] = numbers % 256, numbers // 256
    assert cv2.imwrite(str(path), bgr)


def tiny_numbers() -> dict[str, np.ndarray]:
    """6 x 8 object / part / material number maps: a person (left) and a table (right)."""
    obj = np.zeros((6, 8), np.int64)
    obj[:, :4], obj[:, 4:7] = 3, 300
    part = np.zeros_like(obj)
    part[:2, :4], part[4:, :4], part[4:, 4:7] = 513, 12, 12
    mat = np.where(obj == 3, 21, np.where(obj == 300, 20, 0))
    return {"object": obj, "part": part, "material": mat}


def write_broden(root: Path, *, hierarchy=HIERARCHY) -> Path:
    """A Broden folder: 2 train rows (sources "pascal", "dtd") and 1 val row."""
    images = root / "images"
    images.mkdir(parents=True)
    write_csv(root / "label.csv", ["number", "name", "category"], LABELS)
    for task, rows in C_FILES.items():
        write_csv(root / f"c_{task}.csv", ["code", "number", "name"], rows)
    write_csv(root / "part_hierarchy.csv", ["object", "part"], hierarchy)
    image = np.random.default_rng(0).integers(0, 255, (6, 8, 3), dtype=np.uint8)
    cv2.imwrite(str(images / "a.png"), image)
    cv2.imwrite(str(images / "t.png"), image[:4, :4])
    for task, numbers in tiny_numbers().items():
        write_numbers(images / f"a_{task}.png", numbers)
    columns = ["image", "split", "ih", "iw", "sh", "sw", "object", "part", "material"]
    columns += ["scene", "texture", "source"]
    rows = [
        ["a.png", "train", 6, 8, 6, 8, "a_object.png", "a_part.png", "a_material.png", 41, "",
         "pascal"],
        ["t.png", "train", 4, 4, 4, 4, "", "", "", "", 60, "dtd"],
        ["a.png", "val", 6, 8, 6, 8, "a_object.png", "", "", 40, "", ""],
    ]  # fmt: skip
    write_csv(root / "index.csv", columns, rows)
    return root


def prepare_tiny_multitask(root: Path) -> tuple[str, str]:
    """Generate the tiny synthetic set under ``root`` and register ``synthetic_mt_tiny_*``."""
    prepare_synthetic_scenes(root / MT_PREFIX, MT_PARAMS)
    if f"{MT_PREFIX}_multitask_train" not in DatasetCatalog:
        register_synthetic_multitask(MT_PREFIX, params=MT_PARAMS)
    return f"{MT_PREFIX}_multitask_train", f"{MT_PREFIX}_multitask_val"
