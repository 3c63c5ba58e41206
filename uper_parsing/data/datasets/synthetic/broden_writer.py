"""The synthetic scenes in the Broden-style multi-task layout, as several sources.

``BrodenSceneWriter`` (format "broden") writes under ``<set>/broden/``:

- source ``scenes``: train scenes labelled for object + part + scene (val: + material);
- source ``materials``: every third train scene (``i % 3 == 2``), labelled for material only;
- source ``textures``: 64 x 64 crops of the procedural textures with random colours, labelled by
  texture class only (``num_scenes // 2`` per split), drawn from ``(seed, split, i)``.

Global label numbers (``label.csv``) are given per distinct name, as in Broden; a name can belong
to several categories (e.g. "glass" is a material and a texture). Parts are stored by part name
("body", "window", ...) and ``part_hierarchy.csv`` says which object owns which part.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ...multitask_utils import MULTITASK_TASKS
from .record import SceneRecord
from .spec import (
    SCENE_TYPES,
    SYNTHETIC_CLASS_NAMES,
    SYNTHETIC_CLASSES,
    SYNTHETIC_MATERIALS,
    ColorSpec,
)
from .textures import TEXTURES, sample_colors
from .writers import SCENE_WRITERS, SceneWriter

__all__ = [
    "BRODEN_SUBDIR",
    "TEXTURE_CLASSES",
    "TEXTURE_CROP_SIZE",
    "BrodenSceneWriter",
    "render_texture_crop",
    "scene_source",
    "synthetic_broden_classes",
    "synthetic_part_hierarchy",
    "synthetic_sources",
]

BRODEN_SUBDIR = "broden"
TEXTURE_CLASSES: tuple[str, ...] = tuple(t for t in TEXTURES if t != "noise_blob")
TEXTURE_CROP_SIZE = 64
_SPLIT_CODES = {"train": 0, "val": 1}
_SOURCE_TASKS = {
    ("train", "scenes"): ("object", "part", "scene"),
    ("train", "materials"): ("material",),
    ("val", "scenes"): ("object", "part", "material", "scene"),
    ("train", "textures"): ("texture",),
    ("val", "textures"): ("texture",),
}
_TEXTURE_COLORS = ColorSpec(0, 180, (0.1, 0.9), (0.2, 0.95))


def synthetic_part_hierarchy() -> list[tuple[str, str]]:
    """(object, part) name pairs of the synthetic things, in ``SYNTHETIC_PARTS`` order."""
    return [(c.name, p.name) for c in SYNTHETIC_CLASSES if c.kind == "thing" for p in c.parts]


def _task_names() -> dict[str, list[str]]:
    part_names = list(dict.fromkeys(p for _, p in synthetic_part_hierarchy()))
    return {
        "object": list(SYNTHETIC_CLASS_NAMES),
        "part": part_names,
        "material": list(SYNTHETIC_MATERIALS),
        "scene": list(SCENE_TYPES),
        "texture": list(TEXTURE_CLASSES),
    }


def _label_numbers() -> tuple[dict[str, int], dict[str, list[str]]]:
    """{name: global number (1-based)} and {name: categories} over all tasks."""
    numbers: dict[str, int] = {}
    categories: dict[str, list[str]] = {}
    for task, names in _task_names().items():
        for name in names:
            numbers.setdefault(name, len(numbers) + 1)
            categories.setdefault(name, []).append(task)
    return numbers, categories


def synthetic_broden_classes() -> dict[str, list[tuple[int, str]]]:
    """{task: [(global number, name)] in train-id order}, as the written csv files say."""
    numbers, _ = _label_numbers()
    return {t: [(numbers[n], n) for n in names] for t, names in _task_names().items()}


def scene_source(split: str, i: int) -> str:
    """Source of the ``i``-th scene of ``split``."""
    return "materials" if split == "train" and i % 3 == 2 else "scenes"


def synthetic_sources(num_scenes: int, split: str) -> list[dict[str, Any]]:
    """Sources of a split with ``num_scenes`` scenes, in the order of the written index."""
    sizes: dict[str, int] = {}
    for i in range(num_scenes):
        sizes[scene_source(split, i)] = sizes.get(scene_source(split, i), 0) + 1
    sizes["textures"] = num_scenes // 2
    return [
        {"name": s, "tasks": list(_SOURCE_TASKS[split, s]), "size": n}
        for s, n in sizes.items()
        if n > 0
    ]


def render_texture_crop(seed: int, split: str, i: int) -> tuple[np.ndarray, int]:
    """Texture crop ``i`` of ``split``: ((64, 64, 3) uint8 RGB, index into TEXTURE_CLASSES)."""
    rng = np.random.default_rng([seed, _SPLIT_CODES[split], i, 7])
    label = int(rng.integers(len(TEXTURE_CLASSES)))
    c1, c2 = sample_colors(rng, _TEXTURE_COLORS)
    size = TEXTURE_CROP_SIZE
    image = TEXTURES[TEXTURE_CLASSES[label]](rng, size, size, rng.uniform(0.6, 1.4), c1, c2)
    image = image + rng.normal(0.0, rng.uniform(2.0, 6.0), image.shape)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8), label


def _encode(numbers: np.ndarray) -> np.ndarray:
    """(H, W) label numbers -> (H, W, 3) uint8 BGR with R = n % 256, G = n // 256."""
    out = np.zeros((*numbers.shape, 3), np.uint8)
    out[..., 2] = numbers % 256
    out[..., 1] = numbers // 256
    return out


def _lut(names: Sequence[str], numbers: dict[str, int]) -> np.ndarray:
    """Record id (0 = none, i + 1 = names[i]) -> global number."""
    return np.array([0] + [numbers[n] for n in names], np.int64)


class BrodenSceneWriter(SceneWriter):
    """Writes ``broden/{index,label,c_<task>,part_hierarchy}.csv`` and ``broden/images/``."""

    def __init__(self, root: str | Path, *, jpeg_quality: int = 92, seed: int = 0) -> None:
        super().__init__(Path(root) / BRODEN_SUBDIR, jpeg_quality=jpeg_quality, seed=seed)
        self._numbers, self._categories = _label_numbers()
        part_names = [p for _, p in synthetic_part_hierarchy()]
        self._luts = {
            "object": _lut(SYNTHETIC_CLASS_NAMES, self._numbers),
            "part": _lut(part_names, self._numbers),
            "material": _lut(SYNTHETIC_MATERIALS, self._numbers),
        }
        self._rows: list[dict[str, Any]] = []
        self._scene_counts: dict[str, int] = {}

    def write(self, record: SceneRecord, split: str, stem: str) -> None:
        i = self._scene_counts.get(split, 0)
        self._scene_counts[split] = i + 1
        source = scene_source(split, i)
        rel = f"{source}/{stem}"
        self._write_jpeg(self.root / "images" / f"{rel}.jpg", record)
        row = self._row(f"{rel}.jpg", split, source, (record.height, record.width))
        for task in _SOURCE_TASKS[split, source]:
            if task == "scene":
                row["scene"] = self._numbers[SCENE_TYPES[record.scene]]
                continue
            path = self.root / "images" / f"{rel}_{task}.png"
            if not cv2.imwrite(str(path), _encode(self._luts[task][getattr(record, task)])):
                raise OSError(f"Could not write {path}")
            row[task] = f"{rel}_{task}.png"
        self._rows.append(row)

    def _row(self, image: str, split: str, source: str, hw: tuple[int, int]) -> dict[str, Any]:
        h, w = hw
        return {"image": image, "split": split, "ih": h, "iw": w, "sh": h, "sw": w,
                "source": source}  # fmt: skip

    def finish(self, split: str) -> None:
        size = TEXTURE_CROP_SIZE
        for i in range(self._scene_counts.get(split, 0) // 2):
            image, label = render_texture_crop(self.seed, split, i)
            rel = f"textures/synthetic_{split}_texture_{i:05d}.jpg"
            self._write_jpeg(self.root / "images" / rel, image)
            row = self._row(rel, split, "textures", (size, size))
            row["texture"] = self._numbers[TEXTURE_CLASSES[label]]
            self._rows.append(row)
        self._write_csvs()

    def _write_csvs(self) -> None:
        columns = ["image", "split", "ih", "iw", "sh", "sw", *MULTITASK_TASKS, "source"]
        _write_csv(self.root / "index.csv", columns, self._rows)
        labels = [
            {"number": n, "name": name, "category": ";".join(self._categories[name])}
            for name, n in self._numbers.items()
        ]
        _write_csv(self.root / "label.csv", ["number", "name", "category"], labels)
        for task, classes in synthetic_broden_classes().items():
            rows = [
                {"code": c + 1, "number": n, "name": name} for c, (n, name) in enumerate(classes)
            ]
            _write_csv(self.root / f"c_{task}.csv", ["code", "number", "name"], rows)
        hierarchy = [{"object": o, "part": p} for o, p in synthetic_part_hierarchy()]
        _write_csv(self.root / "part_hierarchy.csv", ["object", "part"], hierarchy)


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


SCENE_WRITERS["broden"] = BrodenSceneWriter
