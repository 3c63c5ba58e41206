"""Checks of a dataset's annotation files (the panoptic JSON, the Broden CSV files), each problem
reported: the loaders stop at the first, or (duplicate image ids in a JSON) do not notice."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..multitask_utils import MULTITASK_TASKS
from .problem import Problem

__all__ = ["broden_file_problems", "panoptic_json_problems"]

Rows = list[tuple[int, dict[str, str]]]  # (line number, {column: cell})

# Broden CSV files: (columns the loader needs, columns holding integers), as datasets/broden.py
# reads them; c_<task>.csv for each task that has one.
_BRODEN_TABLES = {
    "label.csv": (("number", "name", "category"), ("number",)),
    "index.csv": (("image", "split", "ih", "iw", "sh", "sw"), ("ih", "iw", "sh", "sw")),
}
_CLASS_TABLE = (("code", "number", "name"), ("code", "number"))
_IMAGE_LEVEL_TASKS = ("scene", "texture")  # index.csv cells holding a label number


# ------------------------------------------------------------------------------ panoptic JSON


def _read_json(path: str) -> tuple[Any, list[Problem]]:
    """(the parsed file, []) or (None, [its problem])."""
    expected = "a COCO panoptic JSON"
    if not os.path.isfile(path):
        return None, [Problem(path, "file", "not found", expected)]
    if os.path.getsize(path) == 0:
        return None, [Problem(path, "file", "empty", expected)]
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        value = f"malformed ({err.msg} at line {err.lineno} column {err.colno})"
        return None, [Problem(path, "JSON", value, "valid JSON")]
    except UnicodeDecodeError as err:
        return None, [Problem(path, "JSON", f"not UTF-8 text ({err.reason})", "valid JSON")]
    return data, []


def _repeated(values: Iterable[Any]) -> list[tuple[Any, int]]:
    """(value, count) of each value seen more than once, in order of first appearance."""
    return [(v, n) for v, n in Counter(values).items() if n > 1]


def _image_id_problems(path: str, images: list, annotations: list) -> list[Problem]:
    ids = [img.get("id") for img in images if isinstance(img, Mapping)]
    problems = [
        Problem(path, "images id", f"{i!r} listed {n} times", "unique image ids")
        for i, n in _repeated(ids)
    ]
    annotated = [a.get("image_id") for a in annotations if isinstance(a, Mapping)]
    problems += [
        Problem(path, "annotations image_id", f"{i!r} annotated {n} times", "one per image")
        for i, n in _repeated(annotated)
    ]
    known = set(ids)
    for ann in (a for a in annotations if isinstance(a, Mapping)):
        if ann.get("image_id") not in known:
            value = f"{ann.get('image_id')!r} ({ann.get('file_name')}) not in images"
            problems.append(Problem(path, "annotations image_id", value, "an id of images"))
    return problems


def _segment_problems(path: str, annotations: list) -> list[Problem]:
    problems = []
    for ann in (a for a in annotations if isinstance(a, Mapping)):
        segments = ann.get("segments_info")
        if not isinstance(segments, list):
            value = f"{type(segments).__name__} for {ann.get('file_name')}"
            problems.append(Problem(path, "segments_info", value, "a list of segments"))
            continue
        ids = [s.get("id") for s in segments if isinstance(s, Mapping)]
        problems += [
            Problem(
                path,
                f"segments_info of {ann.get('file_name')}",
                f"id {i!r} listed {n} times",
                "unique segment ids per image",
            )
            for i, n in _repeated(ids)
        ]
    return problems


def panoptic_json_problems(metadata: Any) -> list[Problem]:
    """Problems of the COCO panoptic JSON ``metadata.panoptic_json``: missing, empty, malformed,
    ``images`` / ``annotations`` not lists, an image id listed twice (the loader keeps the last),
    an image annotated twice or not listed, a segment id repeated within an image."""
    path = metadata.get("panoptic_json", None)
    if not path:
        return []
    path = os.fspath(path)
    data, problems = _read_json(path)
    if data is None:
        return problems
    if not isinstance(data, Mapping):
        value = f"a {type(data).__name__}"
        return [Problem(path, "JSON", value, "an object with images, annotations, categories")]
    lists = {key: data.get(key) for key in ("images", "annotations")}
    for key, value in lists.items():
        if not isinstance(value, list):
            problems.append(
                Problem(path, key, "missing" if value is None else "not a list", "a list")
            )
    if problems:
        return problems
    problems += _image_id_problems(path, lists["images"], lists["annotations"])
    return problems + _segment_problems(path, lists["annotations"])


# ------------------------------------------------------------------------------ Broden CSV


def _is_int(cell: str | None) -> bool:
    try:
        int(cell or "")
    except ValueError:
        return False
    return True


def _csv_rows(
    path: Path, columns: tuple[str, ...], integers: tuple[str, ...]
) -> tuple[Rows, list[Problem]]:
    """The rows of a CSV file whose cells are well formed, and the problems of the others (file
    missing, empty, not CSV, header without ``columns``, too many cells, a required cell missing,
    an ``integers`` cell that is not an integer)."""
    where = str(path)
    if not path.is_file():
        return [], [Problem(where, "file", "not found", "a Broden CSV file")]
    try:
        with open(path, newline="", encoding="utf-8") as f:
            lines = list(csv.reader(f))
    except (UnicodeDecodeError, csv.Error) as err:
        return [], [Problem(where, "CSV", f"malformed ({err})", "CSV text")]
    if not lines:
        return [], [
            Problem(where, "header", "empty file", f"a header with columns {list(columns)}")
        ]
    header = lines[0]
    if any(c not in header for c in columns):
        return [], [Problem(where, "header", f"columns {header}", f"columns {list(columns)}")]
    rows: Rows = []
    problems = []
    for number, cells in enumerate(lines[1:], start=2):
        if not cells:
            continue
        row = dict(zip(header, cells))
        absent = [c for c in columns if c not in row]
        if len(cells) > len(header) or absent:
            value = f"{len(cells)} cells"
            expected = f"{len(header)}, one per header column"
            problems.append(Problem(where, f"row {number}", value, expected))
            continue
        bad = [c for c in integers if not _is_int(row[c])]
        problems += [
            Problem(where, f"row {number} column '{c}'", repr(row[c]), "an integer") for c in bad
        ]
        if not bad:
            rows.append((number, row))
    return rows, problems


def _class_numbers(
    root: Path, label_numbers: set[int] | None
) -> tuple[dict[str, set[int] | None], list[Problem]]:
    """{task: numbers of c_<task>.csv (None when the file is unreadable)} of the tasks that have
    one, and the problems of those files (with ``label_numbers``: a number label.csv lacks)."""
    numbers: dict[str, set[int] | None] = {}
    problems = []
    for task in MULTITASK_TASKS:
        path = root / f"c_{task}.csv"
        if not path.is_file():
            continue
        rows, found = _csv_rows(path, *_CLASS_TABLE)
        problems += found
        numbers[task] = {int(row["number"]) for _, row in rows} if rows or not found else None
        for line, row in rows if label_numbers is not None else ():
            if int(row["number"]) not in label_numbers or int(row["number"]) == 0:
                value, expected = row["number"], "a number of label.csv other than 0"
                problems.append(Problem(str(path), f"row {line} number", value, expected))
    return numbers, problems


def _index_label_problems(
    path: Path, rows: Rows, numbers: Mapping[str, set[int] | None], split: str | None
) -> list[Problem]:
    """Scene / texture cells of index.csv (of ``split``, or all rows) whose first number is no
    class of c_<task>.csv (not checked against an unreadable c_<task>.csv)."""
    problems = []
    for line, row in rows:
        if split is not None and row["split"] != split:
            continue
        for task in _IMAGE_LEVEL_TASKS:
            cell, known = (row.get(task) or "").strip(), numbers.get(task, set())
            first = cell.split(";")[0].strip()
            if cell and known is not None and (not _is_int(first) or int(first) not in known):
                expected = f"a number of c_{task}.csv"
                problems.append(Problem(str(path), f"row {line} {task}", repr(cell), expected))
    return problems


def broden_file_problems(metadata: Any) -> list[Problem]:
    """Problems of the CSV files of the Broden folder ``metadata.root`` (none without a root):
    ``label.csv`` / ``index.csv`` / ``c_<task>.csv`` missing, empty, malformed or without the
    columns the loader reads; class numbers that ``label.csv`` does not list; scene / texture
    numbers of ``index.csv`` (rows of ``metadata.split``, or every row) of no class table."""
    root = metadata.get("root", None)
    if not root:
        return []
    root = Path(root)
    labels, problems = _csv_rows(root / "label.csv", *_BRODEN_TABLES["label.csv"])
    index, found = _csv_rows(root / "index.csv", *_BRODEN_TABLES["index.csv"])
    known = {int(r["number"]) for _, r in labels} if labels or not problems else None
    numbers, class_problems = _class_numbers(root, known)
    problems += class_problems + found
    split = metadata.get("split", None)
    return problems + _index_label_problems(root / "index.csv", index, numbers, split)
