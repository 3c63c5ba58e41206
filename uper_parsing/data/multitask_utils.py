"""Multi-task (Broden-style) labels: metadata and *the* multi-task label reader.

Label PNGs store a global label number per pixel as ``R + 256 * G`` (0 = unlabelled). The
metadata says, per task, which global number each train id stands for (``label_numbers``), so
``read_multitask_label`` maps numbers to train ids at read time, as ``read_sem_seg`` does with
``reduce_zero_label``. Part ids are global ("object/part" entries of ``part_classes``): a part
number becomes the id of the pair (object at that pixel, part), so reading a part map needs the
object map.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .datasets.sem_seg import distinct_colors
from .readers import read_unchanged

__all__ = [
    "BACKGROUND_PART",
    "MULTITASK_TASKS",
    "MAP_TASKS",
    "MODEL_METADATA_KEYS",
    "model_metadata",
    "multitask_metadata",
    "read_multitask_label",
    "decode_label_numbers",
    "number_lookup",
    "unknown_label_numbers",
]

MULTITASK_TASKS: tuple[str, ...] = ("object", "part", "material", "scene", "texture")
MAP_TASKS: tuple[str, ...] = ("object", "part", "material")  # pixel-level tasks (label PNGs)
# What a multi-task model needs to be built and drawn without its dataset (stored in checkpoints)
MODEL_METADATA_KEYS: tuple[str, ...] = (
    "object_classes",
    "object_colors",
    "part_classes",
    "object_parts",
    "material_classes",
    "material_colors",
    "scene_classes",
    "texture_classes",
    "ignore_label",
    "evaluator_type",
)
_UNKNOWN = -1  # lookup value of a number that is no label of the task
BACKGROUND_PART = "-"  # the part name of "object pixel, no part" (first part of every object)


def multitask_metadata(
    *,
    classes: Mapping[str, Sequence[tuple[int, str]]],
    part_hierarchy: Sequence[tuple[str, str]],
    sources: Sequence[Mapping[str, Any]],
    ignored_numbers: Mapping[str, Sequence[int]] | None = None,
    object_colors: Sequence[Sequence[int]] | None = None,
    ignore_label: int | None = None,
    where: str = "multi-task metadata",
) -> dict[str, Any]:
    """Metadata of the multi-task contract from per-task class lists.

    Args:
        classes: {task: [(global label number, name), ...] in train-id order} for each task of
            ``MULTITASK_TASKS`` (missing = no classes); part entries are part *names*.
        part_hierarchy: (object name, part name) pairs; global part ids follow the object order,
            then the object's background part "-" (added when the pair is not listed), then the
            order of this list.
        sources: [{"name", "tasks", "size"}].
        ignored_numbers: {task: numbers that are labels of the task but not trained (read as
            ``ignore_label``)}.
        object_colors: RGB per object class (generated when None).
        ignore_label: train id of unlabelled pixels; must not be a class id of any task. None:
            255, or 65535 when a task has more than 255 classes (Broden+ has 427 parts).
        where: what the metadata describes, for error messages (e.g. the csv file).

    Returns:
        dict with ``object_classes``, ``object_colors``, ``part_classes``, ``object_parts``,
        ``material_classes``, ``material_colors``, ``scene_classes``, ``texture_classes``,
        ``ignore_label``, ``evaluator_type`` ("multitask"), ``sources``, and the read-time
        mapping ``label_numbers`` ({task: [number of train id 0, 1, ...]}; for "part", the part
        name's number of each global part id, 0 for an added "-") and ``ignored_numbers``.
        ``object_parts[o][0]`` is o's "-" part whenever o owns parts.
    """
    names = {t: [str(n) for _, n in classes.get(t, ())] for t in MULTITASK_TASKS}
    numbers = {t: [int(v) for v, _ in classes.get(t, ())] for t in MULTITASK_TASKS}
    part_number = {BACKGROUND_PART: 0, **dict(zip(names["part"], numbers["part"]))}
    object_index = {n: i for i, n in enumerate(names["object"])}
    for obj, part in part_hierarchy:
        if obj not in object_index:
            raise ValueError(f"{where}: part hierarchy names unknown object '{obj}'")
        if part not in part_number:
            raise ValueError(f"{where}: part hierarchy names unknown part '{part}' (of '{obj}')")
    if len(set(part_hierarchy)) != len(part_hierarchy):
        raise ValueError(f"{where}: part hierarchy lists an (object, part) pair twice")
    part_classes, part_numbers, object_parts = [], [], []
    for obj in names["object"]:
        owned = [p for o, p in part_hierarchy if o == obj and p != BACKGROUND_PART]
        owned = [BACKGROUND_PART, *owned] if owned else []
        object_parts.append(list(range(len(part_classes), len(part_classes) + len(owned))))
        part_classes += [f"{obj}/{p}" for p in owned]
        part_numbers += [part_number[p] for p in owned]
    counts = {t: len(part_classes) if t == "part" else len(names[t]) for t in MULTITASK_TASKS}
    if ignore_label is None:
        ignore_label = 255 if max(counts.values()) <= 255 else 65535
    for task, count in counts.items():
        if 0 <= ignore_label < count:
            raise ValueError(
                f"{where}: task '{task}' has {count} classes, so ignore_label {ignore_label} "
                "would be a class id; keep fewer classes or pass a larger ignore_label"
            )
    if object_colors is None:
        object_colors = distinct_colors(len(names["object"]))
    if len(object_colors) != len(names["object"]):
        raise ValueError(f"{where}: {len(object_colors)} object_colors for the object classes")
    label_numbers = {t: numbers[t] for t in MULTITASK_TASKS if t != "part"}
    label_numbers["part"] = part_numbers
    return {
        "object_classes": names["object"],
        "object_colors": [tuple(int(v) for v in c) for c in object_colors],
        "part_classes": part_classes,
        "object_parts": object_parts,
        "material_classes": names["material"],
        "material_colors": distinct_colors(len(names["material"])),
        "scene_classes": names["scene"],
        "texture_classes": names["texture"],
        "ignore_label": int(ignore_label),
        "evaluator_type": "multitask",
        "sources": [
            {"name": str(s["name"]), "tasks": list(s["tasks"]), "size": int(s["size"])}
            for s in sources
        ],
        "label_numbers": label_numbers,
        "ignored_numbers": {
            t: sorted(int(v) for v in (ignored_numbers or {}).get(t, ())) for t in MULTITASK_TASKS
        },
    }


def model_metadata(metadata: Any) -> dict[str, Any]:
    """The entries of ``MODEL_METADATA_KEYS`` that ``metadata`` (a ``Metadata`` or dict) has, as
    plain lists: what a checkpoint of a multi-task model stores."""
    out = {}
    for key in MODEL_METADATA_KEYS:
        value = metadata.get(key)
        if isinstance(value, (list, tuple)):
            value = [list(v) if isinstance(v, (list, tuple)) else v for v in value]
        if value is not None:
            out[key] = value
    return out


def number_lookup(metadata: Any, task: str, num_values: int = 65536) -> np.ndarray:
    """Lookup from global label numbers to the task's class index: ``lut[number]``.

    0 and the task's ignored numbers -> ``ignore_label``; numbers that are no label of the task
    -> -1. For "part" the index is that of the part *name* among the distinct part numbers
    (``part_number_values``), to be combined with the object map.
    """
    ignore = int(metadata.get("ignore_label", 255))
    lut = np.full(num_values, _UNKNOWN, dtype=np.int64)
    lut[0] = ignore
    for number in metadata.get("ignored_numbers", {}).get(task, ()):
        lut[int(number)] = ignore
    values = _part_number_values(metadata) if task == "part" else metadata.label_numbers[task]
    for index, number in enumerate(values):
        lut[int(number)] = index
    return lut


def _part_number_values(metadata: Any) -> list[int]:
    """The distinct nonzero part numbers (0 is an added "-" part's number: unlabelled)."""
    return sorted(set(int(v) for v in metadata.label_numbers["part"]) - {0})


def _part_pair_table(metadata: Any) -> np.ndarray:
    """(K_obj + 1, P_names + 1) global part id of (object train id, part-name index), the last
    column for an unlabelled part and the last row for an unlabelled object. An object with parts
    reads every part name it does not own, and an unlabelled part, as its "-" part (its first);
    objects without parts and the last row read ``ignore_label``."""
    ignore = int(metadata.get("ignore_label", 255))
    values = _part_number_values(metadata)
    column = {v: i for i, v in enumerate(values)}
    table = np.full((len(metadata.object_classes) + 1, len(values) + 1), ignore, np.int64)
    numbers = metadata.label_numbers["part"]
    for obj, owned in enumerate(metadata.object_parts):
        if owned:
            table[obj] = owned[0]
        for part_id in owned:
            if int(numbers[part_id]) != 0:
                table[obj, column[int(numbers[part_id])]] = part_id
    return table


def unknown_label_numbers(numbers: np.ndarray, mapped: np.ndarray) -> list[int]:
    """The distinct label numbers of ``numbers`` (from ``decode_label_numbers``) that are no label
    of the task, given ``mapped = number_lookup(metadata, task)[numbers]``; sorted."""
    return np.unique(numbers[mapped == _UNKNOWN]).tolist()


def decode_label_numbers(file_name: str | os.PathLike) -> np.ndarray:
    """Read a Broden label PNG: (H, W) int64 label numbers ``R + 256 * G`` (grey PNGs: the value).

    Raises:
        FileNotFoundError / ValueError naming the file.
    """
    file_name = os.fspath(file_name)
    stored = read_unchanged(file_name, "Label file")
    if stored.ndim == 2:
        return stored.astype(np.int64)
    if stored.ndim != 3 or stored.shape[2] < 3 or stored.dtype != np.uint8:
        raise ValueError(
            f"Label file {file_name} must be an 8-bit RGB image encoding R + 256 * G, got shape "
            f"{stored.shape} and dtype {stored.dtype}"
        )
    return stored[..., 2].astype(np.int64) + 256 * stored[..., 1].astype(np.int64)


def read_multitask_label(
    file_name: str | os.PathLike | Sequence[str | os.PathLike],
    metadata: Any,
    task: str,
    expected_hw: tuple[int, int] | None = None,
    *,
    objects: np.ndarray | None = None,
) -> np.ndarray:
    """Read the label map(s) of ``task`` and return train ids, checked against ``metadata``.

    Args:
        file_name: one label PNG, or several layers (Broden's ';'-separated cells): a pixel takes
            the first layer's label that is not 0.
        metadata: multi-task metadata (``label_numbers``, ``ignored_numbers``, ``ignore_label``,
            ``object_classes`` / ``object_parts`` for parts).
        task: "object", "part" or "material".
        expected_hw: (height, width) every layer must have, or None.
        objects: for "part": (H, W) object train ids of the same image (ignore where unknown).

    Returns:
        ndarray (H, W) int64: train ids (``part``: global part ids of the pixel's object: its
        "-" part where the part is unlabelled, not trained or not one of the object's), or
        ``ignore_label`` (unlabelled; for parts: object unlabelled or without parts).

    Raises:
        FileNotFoundError: a file does not exist.
        ValueError: size mismatch, undecodable file, or a number that is no label of ``task``
            (the message names the file and the numbers).
    """
    if task not in MAP_TASKS:
        raise ValueError(f"read_multitask_label reads {MAP_TASKS} maps, not '{task}'")
    files = [file_name] if isinstance(file_name, (str, os.PathLike)) else list(file_name)
    if not files:
        raise ValueError(f"No label file given for task '{task}'")
    lut = number_lookup(metadata, task)
    ignore = int(metadata.get("ignore_label", 255))
    out = None
    for path in files:
        numbers = decode_label_numbers(path)
        if expected_hw is not None and tuple(numbers.shape) != tuple(expected_hw):
            raise ValueError(
                f"Label file {os.fspath(path)} has size (H, W) = {tuple(numbers.shape)} but "
                f"{tuple(expected_hw)} is expected (its index row / image)"
            )
        mapped = lut[numbers]
        values = unknown_label_numbers(numbers, mapped)
        if values:
            shown = ", ".join(map(str, values[:10])) + (" ..." if len(values) > 10 else "")
            raise ValueError(
                f"Label file {os.fspath(path)} has label numbers [{shown}] that are no "
                f"'{task}' label of the dataset (see its label.csv / c_{task}.csv)"
            )
        out = mapped if out is None else np.where(out == ignore, mapped, out)
    if task == "part":
        out = _parts_of_objects(out, objects, metadata, files[0])
    return out


def _parts_of_objects(
    part_index: np.ndarray, objects: np.ndarray | None, metadata: Any, file_name: Any
) -> np.ndarray:
    if objects is None:
        raise ValueError(
            f"Reading part labels {os.fspath(file_name)} needs the object map of the image (part "
            "numbers are resolved per object): pass objects=read_multitask_label("
            "<object_file_name>, metadata, 'object', expected_hw)"
        )
    if objects.shape != part_index.shape:
        raise ValueError(
            f"Part label file {os.fspath(file_name)} has size {part_index.shape} but the object "
            f"map has size {objects.shape}"
        )
    ignore = int(metadata.get("ignore_label", 255))
    table = _part_pair_table(metadata)
    num_objects = len(metadata.object_classes)
    obj = np.where((objects >= 0) & (objects < num_objects), objects, num_objects).astype(np.int64)
    column = np.where(part_index == ignore, table.shape[1] - 1, part_index)
    return table[obj, column]
