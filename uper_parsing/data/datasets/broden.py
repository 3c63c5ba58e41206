"""Broden-style multi-task datasets: ``index.csv`` + ``label.csv`` + ``c_<task>.csv`` + label PNGs.

Layout (see ``datasets/README.md``)::

    <root>/index.csv            image, split, ih, iw, sh, sw, object, part, material, scene,
                                texture[, source]
    <root>/label.csv            number, name, category[, ...]   (global label numbers)
    <root>/c_<task>.csv         code, number, name[, ...]       (the task's classes, by code)
    <root>/part_hierarchy.csv   object, part (names)            (our extension: parts per object)
    <root>/images/...           images and label PNGs (number = R + 256 * G)

``load_broden`` returns the dataset dicts of the multi-task contract; ``register_multitask``
registers a user's own Broden-format folder; ``register_all_broden`` registers the builtin copy
under ``$UPER_PARSING_DATASETS/broden`` lazily.
"""

from __future__ import annotations

import csv
import functools
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..catalog import DatasetCatalog, MetadataCatalog
from ..multitask_utils import MAP_TASKS, MODEL_METADATA_KEYS, MULTITASK_TASKS, multitask_metadata
from .paths import datasets_root

__all__ = [
    "BrodenClasses",
    "read_broden_classes",
    "broden_sources",
    "load_broden",
    "broden_metadata",
    "register_multitask",
    "register_all_broden",
    "BRODEN_SPLITS",
]

logger = logging.getLogger(__name__)

BRODEN_DIRNAME = "broden"
BRODEN_SPLITS = {"broden_multitask_train": "train", "broden_multitask_val": "val"}
DEFAULT_SOURCE = "broden"
_INDEX_COLUMNS = ("image", "split", "ih", "iw", "sh", "sw")


@dataclass(frozen=True)
class BrodenClasses:
    """Classes of a Broden folder: per task [(number, name)] by code, the part hierarchy, and the
    numbers each task knows but does not train (read as ignore)."""

    classes: dict[str, list[tuple[int, str]]]
    part_hierarchy: list[tuple[str, str]]
    ignored_numbers: dict[str, list[int]]


def _read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"Broden file not found: {path}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path} lacks the column(s) {missing} (has {reader.fieldnames})")
        return list(reader)


def _int(value: str, path: Path, row: int, column: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"{path} row {row}: column '{column}' is not an integer: {value!r}"
        ) from None


def _categories(cell: str) -> set[str]:
    """``"object(12);part(3)"`` -> {"object", "part"}."""
    return {re.sub(r"\(.*\)", "", c).strip() for c in cell.split(";") if c.strip()}


def read_broden_classes(root: str | os.PathLike) -> BrodenClasses:
    """Read ``label.csv``, every ``c_<task>.csv`` present and ``part_hierarchy.csv``.

    Raises:
        FileNotFoundError / ValueError naming the file and the offending number or name.
    """
    root = Path(root)
    labels_path = root / "label.csv"
    labels = {}
    known: dict[str, set[int]] = {t: set() for t in MULTITASK_TASKS}
    for i, row in enumerate(_read_csv(labels_path, ("number", "name", "category")), start=2):
        number = _int(row["number"], labels_path, i, "number")
        labels[number] = row["name"]
        for category in _categories(row["category"]) & set(MULTITASK_TASKS):
            known[category].add(number)
    classes, ignored = {}, {}
    for task in MULTITASK_TASKS:
        path = root / f"c_{task}.csv"
        if not path.is_file():
            continue
        rows = []
        for i, row in enumerate(_read_csv(path, ("code", "number", "name")), start=2):
            number = _int(row["number"], path, i, "number")
            if number not in labels or number == 0:
                raise ValueError(f"{path} row {i}: label number {number} is not in {labels_path}")
            rows.append((_int(row["code"], path, i, "code"), number, row["name"]))
        rows.sort()
        classes[task] = [(number, name) for _, number, name in rows]
        ignored[task] = sorted(known[task] - {n for n, _ in classes[task]})
    hierarchy: list[tuple[str, str]] = []
    if "part" in classes:
        path = root / "part_hierarchy.csv"
        hierarchy = [(r["object"], r["part"]) for r in _read_csv(path, ("object", "part"))]
        objects = {n for _, n in classes.get("object", ())}
        parts = {n for _, n in classes["part"]}
        for obj, part in hierarchy:
            if obj not in objects:
                raise ValueError(f"{path}: object '{obj}' is not a class of c_object.csv")
            if part not in parts:
                raise ValueError(f"{path}: part '{part}' is not a class of c_part.csv")
    return BrodenClasses(classes, hierarchy, ignored)


def _index_rows(root: Path, split: str) -> list[tuple[int, dict[str, str]]]:
    path = root / "index.csv"
    rows = _read_csv(path, _INDEX_COLUMNS)
    return [(i, r) for i, r in enumerate(rows, start=2) if r["split"] == split]


def _row_tasks(row: Mapping[str, str]) -> list[str]:
    return [t for t in MULTITASK_TASKS if (row.get(t) or "").strip()]


def broden_sources(root: str | os.PathLike, split: str) -> list[dict[str, Any]]:
    """[{"name", "tasks", "size"}] of the rows of ``split``, in order of first appearance."""
    sources: dict[str, dict[str, Any]] = {}
    for _, row in _index_rows(Path(root), split):
        name = (row.get("source") or "").strip() or DEFAULT_SOURCE
        entry = sources.setdefault(name, {"name": name, "tasks": set(), "size": 0})
        entry["tasks"].update(_row_tasks(row))
        entry["size"] += 1
    return [
        {**s, "tasks": [t for t in MULTITASK_TASKS if t in s["tasks"]]} for s in sources.values()
    ]


def _cell_files(cell: str, images: Path) -> str | list[str]:
    files = [str(images / p.strip()) for p in cell.split(";") if p.strip()]
    return files[0] if len(files) == 1 else files


def _cell_label(cell: str, task: str, train_ids: dict[int, int], where: str) -> int:
    """Train id of the first label number in an image-level cell (``scene`` / ``texture``)."""
    first = cell.split(";")[0].strip()
    try:
        number = int(first)
    except ValueError:
        raise ValueError(f"{where}: {task} cell {cell!r} is not a label number") from None
    if number not in train_ids:
        raise ValueError(f"{where}: {task} label number {number} is not a class of c_{task}.csv")
    return train_ids[number]


def load_broden(root: str | os.PathLike, split: str) -> list[dict]:
    """Dataset dicts of the rows of ``split`` in ``root/index.csv``.

    Returns:
        One dict per row: ``file_name``, ``height`` / ``width`` (ih / iw), ``image_id``,
        ``source`` (the row's ``source`` column, else "broden"), ``tasks`` (the tasks whose cell
        is not empty), ``<task>_file_name`` for object / part / material (a path, or a list of
        layer paths), ``scene`` / ``texture`` (train ids), and ``label_hw`` = (sh, sw) when the
        label maps are stored at another size than the image.

    Raises:
        ValueError: no row has this split, a row's label is unknown, or a row labels parts
            without objects (the message names index.csv and the row).
    """
    root = Path(root)
    classes = read_broden_classes(root)
    train_ids = {t: {n: i for i, (n, _) in enumerate(c)} for t, c in classes.classes.items()}
    images = root / "images"
    index = root / "index.csv"
    dicts = []
    for i, row in _index_rows(root, split):
        where = f"{index} row {i}"
        hw = tuple(_int(row[k], index, i, k) for k in ("ih", "iw"))
        shw = tuple(_int(row[k], index, i, k) for k in ("sh", "sw"))
        tasks = _row_tasks(row)
        missing = [t for t in tasks if t not in classes.classes]
        if missing:
            raise ValueError(f"{where}: labels {missing} but {root} has no c_{missing[0]}.csv")
        if "part" in tasks and "object" not in tasks:
            raise ValueError(f"{where}: part labels need object labels in the same row")
        d = {
            "file_name": str(images / row["image"]),
            "height": hw[0],
            "width": hw[1],
            "image_id": os.path.splitext(row["image"])[0],
            "source": (row.get("source") or "").strip() or DEFAULT_SOURCE,
            "tasks": tasks,
        }
        for task in tasks:
            if task in MAP_TASKS:
                d[f"{task}_file_name"] = _cell_files(row[task], images)
            else:
                d[task] = _cell_label(row[task], task, train_ids[task], where)
        if shw != hw and any(t in MAP_TASKS for t in tasks):
            d["label_hw"] = shw
        dicts.append(d)
    if not dicts:
        raise ValueError(f"{index} has no rows of split '{split}'")
    logger.info("Loaded %d Broden-style images of split '%s' from %s", len(dicts), split, root)
    return dicts


def broden_metadata(
    root: str | os.PathLike, split: str, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Metadata of the multi-task contract for a Broden folder (reads its csv files).

    ``overrides`` may set ``object_colors`` or ``ignore_label`` (used to build the metadata) and
    any other key (added as is).
    """
    overrides = dict(overrides or {})
    root = Path(root)
    classes = read_broden_classes(root)
    sources = broden_sources(root, split)
    if not sources:
        raise ValueError(f"{root / 'index.csv'} has no rows of split '{split}'")
    meta = multitask_metadata(
        classes=classes.classes,
        part_hierarchy=classes.part_hierarchy,
        sources=sources,
        ignored_numbers=classes.ignored_numbers,
        object_colors=overrides.pop("object_colors", None),
        ignore_label=overrides.pop("ignore_label", None),
        where=str(root),
    )
    for source in sources:
        unknown = [t for t in source["tasks"] if t not in classes.classes]
        if unknown:
            raise ValueError(f"{root}: source '{source['name']}' labels {unknown} without c_ files")
    meta.update(overrides)
    return meta


def register_multitask(
    name: str,
    *,
    root: str | os.PathLike,
    split: str,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Register split ``split`` of a Broden-format folder ``root`` as dataset ``name``.

    The csv files are read and checked now (unknown numbers or hierarchy names -> an error naming
    the file); images and label PNGs are read when the dataset is loaded / mapped.

    Args:
        metadata: optional overrides (``object_colors``, ``ignore_label``, extra keys).
    """
    meta = broden_metadata(root, split, metadata)
    DatasetCatalog.register(name, functools.partial(load_broden, str(root), split))
    MetadataCatalog.get(name).set(root=str(root), split=split, **meta)


def _builtin_root() -> str:
    return str(datasets_root() / BRODEN_DIRNAME)


@functools.lru_cache(maxsize=8)
def _cached_metadata(root: str, split: str) -> dict[str, Any]:
    return broden_metadata(root, split)


def _builtin_field(split: str, key: str) -> Any:
    return _cached_metadata(_builtin_root(), split)[key]


def _load_builtin(split: str) -> list[dict]:
    return load_broden(_builtin_root(), split)


# read lazily from the csv files: what a model needs, and the read-time mapping
_LAZY_FIELDS = (
    *(k for k in MODEL_METADATA_KEYS if k != "evaluator_type"),
    "sources",
    "label_numbers",
    "ignored_numbers",
)


def register_all_broden() -> None:
    """Register ``broden_multitask_train`` / ``_val`` (``$UPER_PARSING_DATASETS/broden``); the
    csv files are read when the metadata or the dataset is first used."""
    for name, split in BRODEN_SPLITS.items():
        DatasetCatalog.register(name, functools.partial(_load_builtin, split))
        lazy = {k: functools.partial(_builtin_field, split, k) for k in _LAZY_FIELDS}
        MetadataCatalog.get(name).set(evaluator_type="multitask").set_lazy(
            root=_builtin_root, **lazy
        )
