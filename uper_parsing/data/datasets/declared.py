"""Datasets declared in a YAML / JSON file, registered by name from the config.

A declaration file names a family, a dataset name and its splits; split ``s`` is registered as
``<name>_<s>`` through the family's checked ``register_*`` function (``register_sem_seg``,
``register_coco_panoptic``, ``register_multitask``). Config files list declarations in
``DATASETS.REGISTER``; ``register_declared_datasets(cfg)`` registers them at set-up. Example::

    family: sem_seg                     # sem_seg | coco_panoptic | multitask
    name: my_data                       # registers my_data_train, my_data_val
    stuff_classes: [road, car, person]
    ignore_label: 255
    splits:
      train: {image_root: images/train, label_root: labels/train}
      val: {image_root: images/val, label_root: labels/val}

Relative paths resolve against the folder of the declaration file. Every problem raises
``DeclarationError`` naming the file, the field and the expected value. Registering the same
file again in a process does nothing; a name already registered otherwise is an error.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..catalog import DatasetCatalog, MetadataCatalog
from .broden import register_multitask
from .coco_panoptic import register_coco_panoptic
from .sem_seg import register_sem_seg

__all__ = [
    "DECLARED_FAMILIES",
    "DeclarationError",
    "load_declaration",
    "register_declared",
    "register_declared_datasets",
]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class DeclarationError(ValueError):
    """A dataset declaration that cannot be registered: ``<file>: <field>: <problem> (expected
    <expected>)``."""

    def __init__(self, path: str | os.PathLike, key: str, problem: str, expected: str = "") -> None:
        hint = f" (expected {expected})" if expected else ""
        super().__init__(f"{os.fspath(path)}: {key}: {problem}{hint}")


# ----------------------------------------------------------------------------- value checks
# Each takes (value, folder of the declaration) and returns the checked value, or raises
# TypeError / ValueError whose message is the problem; its ``expected`` text is in _KINDS.


def _str(value: Any, _: Path) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"got {value!r}")
    return value


def _name(value: Any, _: Path) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise TypeError(f"got {value!r}")
    return value


def _int(value: Any, _: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"got {value!r}")
    return value


def _bool(value: Any, _: Path) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"got {value!r}")
    return value


def _ext(value: Any, _: Path) -> str:
    if not isinstance(value, str) or not value.startswith("."):
        raise TypeError(f"got {value!r}")
    return value


def _names(value: Any, _: Path) -> list[str]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise TypeError(f"got {value!r}")
    return list(value)


def _colors(value: Any, _: Path) -> list[list[int]]:
    def rgb(c: Any) -> bool:
        return isinstance(c, list) and len(c) == 3 and all(_byte(v) for v in c)

    if not isinstance(value, list) or not all(rgb(c) for c in value):
        raise TypeError(f"got {value!r}")
    return [list(c) for c in value]


def _byte(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255


def _id_map(value: Any, _: Path) -> dict[int, int]:
    if not isinstance(value, Mapping) or not value:
        raise TypeError(f"got {value!r}")
    out = {}
    for stored, train_id in value.items():
        key = int(stored) if isinstance(stored, str) and stored.strip().isdigit() else stored
        if isinstance(key, bool) or not isinstance(key, int) or isinstance(train_id, bool):
            raise TypeError(f"key {stored!r} is not an integer")
        if not isinstance(train_id, int):
            raise TypeError(f"{stored!r} maps to {train_id!r}, not an integer")
        out[key] = train_id
    return out


def _categories(value: Any, _: Path) -> list[dict]:
    if not isinstance(value, list) or not value or not all(isinstance(c, Mapping) for c in value):
        raise TypeError(f"got {value!r}")
    return [dict(c) for c in value]


def _path(value: Any, folder: Path, is_dir: bool) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"got {value!r}")
    path = (folder / os.path.expanduser(value)).resolve()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir() != is_dir:
        raise FileNotFoundError(f"{path} is {'a file' if is_dir else 'a folder'}")
    return str(path)


def _dir(value: Any, folder: Path) -> str:
    return _path(value, folder, is_dir=True)


def _file(value: Any, folder: Path) -> str:
    return _path(value, folder, is_dir=False)


_KINDS: dict[str, tuple[Callable[[Any, Path], Any], str]] = {
    "str": (_str, "a non-empty string"),
    "name": (_name, "a name of letters, digits, '_', '.', '-'"),
    "int": (_int, "an integer"),
    "bool": (_bool, "true or false"),
    "ext": (_ext, "a file ending such as '.jpg'"),
    "names": (_names, "a non-empty list of names"),
    "colors": (_colors, "a list of [R, G, B] triples of 0..255"),
    "id_map": (_id_map, "a mapping {stored label value: train id} of integers"),
    "categories": (_categories, "a non-empty list of {id, name, isthing[, color]}"),
    "dir": (_dir, "an existing folder, relative to the declaration file's folder"),
    "file": (_file, "an existing file, relative to the declaration file's folder"),
}


@dataclass(frozen=True)
class Field:
    """One key of a declaration: its kind (a key of ``_KINDS``) and whether it is required."""

    kind: str
    required: bool = False


# ----------------------------------------------------------------------------- families


@dataclass(frozen=True)
class Family:
    """What a family's declaration holds and how a split of it is registered.

    ``fields``: top-level keys besides family / name / splits. ``split_fields``: keys of each
    entry of ``splits`` (a mapping split -> fields); None: ``splits`` is a list of split names.
    ``register(dataset_name, split, top, split_values)`` calls the family's ``register_*``;
    ``complete(path, top, splits)``, when set, fills in the defaults read from the data.
    """

    fields: dict[str, Field]
    split_fields: dict[str, Field] | None
    register: Callable[[str, str, dict[str, Any], dict[str, Any]], None]
    splits_expected: str = "a mapping {split: {field: value}}"
    complete: Callable[[Path, dict[str, Any], dict[str, dict]], None] | None = None


def _register_sem_seg(name: str, split: str, top: dict, values: dict) -> None:
    keys = ("stuff_classes", "stuff_colors", "ignore_label", "reduce_zero_label", "label_id_map")
    metadata = {k: top[k] for k in keys if k in top}
    exts = {k: top[k] for k in ("image_ext", "label_ext") if k in top}
    register_sem_seg(
        name,
        image_root=values["image_root"],
        label_root=values["label_root"],
        metadata=metadata,
        **exts,
    )


def _register_coco_panoptic(name: str, split: str, top: dict, values: dict) -> None:
    register_coco_panoptic(
        name,
        {"categories": top["categories"]},
        image_root=values["image_root"],
        panoptic_root=values["panoptic_root"],
        panoptic_json=values["panoptic_json"],
        sem_seg_root=values.get("sem_seg_root"),
    )


def _register_multitask(name: str, split: str, top: dict, values: dict) -> None:
    metadata = {k: top[k] for k in ("object_colors", "ignore_label") if k in top}
    register_multitask(name, root=top["root"], split=split, metadata=metadata)


def _json_categories(path: Path, top: dict[str, Any], splits: dict[str, dict]) -> None:
    """``categories`` of a panoptic declaration, by default those of its first split's JSON."""
    if "categories" in top:
        return
    split = next(iter(splits))
    json_file = splits[split]["panoptic_json"]
    try:
        with open(json_file, encoding="utf-8") as f:
            top["categories"] = _categories(json.load(f).get("categories"), path.parent)
    except (OSError, ValueError, TypeError, AttributeError) as err:
        raise DeclarationError(
            path,
            "categories",
            f"not given, and not readable from {json_file} (splits.{split}.panoptic_json): {err}",
            "a list of {id, name, isthing[, color]} here or in the JSON",
        ) from None


DECLARED_FAMILIES: dict[str, Family] = {
    "sem_seg": Family(
        fields={
            "stuff_classes": Field("names", required=True),
            "stuff_colors": Field("colors"),
            "ignore_label": Field("int"),
            "reduce_zero_label": Field("bool"),
            "label_id_map": Field("id_map"),
            "image_ext": Field("ext"),
            "label_ext": Field("ext"),
        },
        split_fields={"image_root": Field("dir", True), "label_root": Field("dir", True)},
        register=_register_sem_seg,
    ),
    "coco_panoptic": Family(
        fields={"categories": Field("categories")},  # default: the first split's JSON
        split_fields={
            "image_root": Field("dir", True),
            "panoptic_root": Field("dir", True),
            "panoptic_json": Field("file", True),
            "sem_seg_root": Field("dir"),
        },
        register=_register_coco_panoptic,
        complete=_json_categories,
    ),
    "multitask": Family(
        fields={
            "root": Field("dir", required=True),
            "object_colors": Field("colors"),
            "ignore_label": Field("int"),
        },
        split_fields=None,
        register=_register_multitask,
        splits_expected="a non-empty list of split names of index.csv",
    ),
}
_COMMON = ("family", "name", "splits")


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Declaration:
    """A checked declaration: absolute paths, ``splits`` as {split: {field: value}}."""

    path: str
    family: str
    name: str
    fields: dict[str, Any]
    splits: dict[str, dict[str, Any]]

    def dataset_names(self) -> dict[str, str]:
        """{split: registered dataset name}."""
        return {split: f"{self.name}_{split}" for split in self.splits}

    def fingerprint(self) -> str:
        return json.dumps([self.path, self.family, self.fields, self.splits], sort_keys=True)


def _read(path: Path) -> Any:
    if not path.is_file():
        raise DeclarationError(path, "file", "not found", "an existing YAML or JSON file")
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise DeclarationError(path, "file", f"cannot be parsed: {err}", "YAML / JSON") from None


def _check_keys(path: Path, where: str, given: Mapping, allowed: Mapping | tuple) -> None:
    for key in given:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise DeclarationError(
                path, f"{where}{key}", f"unknown key{hint}", f"one of {', '.join(allowed)}"
            )


def _check_fields(path: Path, where: str, given: Mapping, fields: Mapping[str, Field]) -> dict:
    _check_keys(path, where, given, fields)
    out = {}
    for key, spec in fields.items():
        if given.get(key) is None:
            if spec.required:
                raise DeclarationError(path, f"{where}{key}", "missing", _KINDS[spec.kind][1])
            continue
        check, expected = _KINDS[spec.kind]
        try:
            out[key] = check(given[key], path.parent)
        except (TypeError, ValueError, FileNotFoundError) as err:
            raise DeclarationError(path, f"{where}{key}", str(err), expected) from None
    return out


def _require(path: Path, data: Mapping, key: str, kind: str) -> Any:
    if data.get(key) is None:
        raise DeclarationError(path, key, "missing", _KINDS[kind][1])
    try:
        return _KINDS[kind][0](data[key], path.parent)
    except TypeError as err:
        raise DeclarationError(path, key, str(err), _KINDS[kind][1]) from None


def _splits(path: Path, data: Mapping, family: Family) -> dict[str, dict[str, Any]]:
    splits = data.get("splits")
    if splits is None:
        raise DeclarationError(path, "splits", "missing", family.splits_expected)
    if family.split_fields is None:
        if not isinstance(splits, list) or not splits:
            raise DeclarationError(path, "splits", f"got {splits!r}", family.splits_expected)
        splits = {s: {} for s in splits}
    elif not isinstance(splits, Mapping) or not splits:
        raise DeclarationError(path, "splits", f"got {splits!r}", family.splits_expected)
    out = {}
    for split, values in splits.items():
        if not isinstance(split, str) or not _NAME.match(split):
            raise DeclarationError(path, "splits", f"split name {split!r}", _KINDS["name"][1])
        if family.split_fields is None:
            out[split] = {}
            continue
        if not isinstance(values, Mapping):
            raise DeclarationError(path, f"splits.{split}", f"got {values!r}", "a mapping")
        out[split] = _check_fields(path, f"splits.{split}.", values, family.split_fields)
    return out


def load_declaration(path: str | os.PathLike) -> Declaration:
    """Read and check a declaration file (nothing is registered).

    Raises:
        DeclarationError: the file is missing or unparsable, or a field is missing, unknown, of
            the wrong type or names a path that does not exist (the message names the field
            and the expected value).
    """
    path = Path(path).expanduser().resolve()
    data = _read(path)
    if not isinstance(data, Mapping):
        raise DeclarationError(path, "file", f"holds {type(data).__name__}", "a mapping of keys")
    family_name = data.get("family")
    if not isinstance(family_name, str) or family_name not in DECLARED_FAMILIES:
        problem = "missing" if family_name is None else f"unknown family {family_name!r}"
        expected = f"one of {', '.join(DECLARED_FAMILIES)}"
        raise DeclarationError(path, "family", problem, expected)
    family = DECLARED_FAMILIES[family_name]
    _check_keys(path, "", data, (*_COMMON, *family.fields))
    name = _require(path, data, "name", "name")
    top = {k: v for k, v in data.items() if k not in _COMMON}
    splits = _splits(path, data, family)
    fields = _check_fields(path, "", top, family.fields)
    if family.complete is not None:
        family.complete(path, fields, splits)
    return Declaration(str(path), family_name, name, fields, splits)


# ----------------------------------------------------------------------------- registering

_REGISTERED: dict[str, str] = {}  # dataset name -> fingerprint of the declaration registering it


def _to_register(decl: Declaration) -> dict[str, str]:
    """{split: dataset name} of the splits of ``decl`` not yet registered from it.

    Raises:
        DeclarationError: a name is registered otherwise (builtin, another declaration, or this
            file with other contents).
    """
    todo = {}
    for split, name in decl.dataset_names().items():
        if name not in DatasetCatalog:
            todo[split] = name
        elif _REGISTERED.get(name) != decl.fingerprint():
            by = "a declaration with other contents" if name in _REGISTERED else "other code"
            raise DeclarationError(
                decl.path,
                "name",
                f"dataset '{name}' (split '{split}') is already registered by {by}",
                "a name no other dataset uses",
            )
    return todo


def _unregister(names: list[str]) -> None:
    for name in names:
        for catalog in (DatasetCatalog, MetadataCatalog):
            if name in catalog:
                catalog.remove(name)
        _REGISTERED.pop(name, None)


def register_declared(path: str | os.PathLike) -> list[str]:
    """Register every split of the declaration file ``path`` as ``<name>_<split>``.

    Returns:
        The dataset names, in the order of ``splits``.

    Raises:
        DeclarationError: see ``load_declaration``; a dataset name already registered by
            something else; the family's ``register_*`` rejecting a value (its message is kept).
            Nothing stays registered after an error.
    """
    decl = load_declaration(path)
    done: list[str] = []
    family = DECLARED_FAMILIES[decl.family]
    for split, name in _to_register(decl).items():
        try:
            family.register(name, split, decl.fields, decl.splits[split])
        except (ValueError, TypeError, OSError) as err:
            _unregister([*done, name])
            raise DeclarationError(decl.path, f"splits.{split}", str(err)) from None
        _REGISTERED[name] = decl.fingerprint()
        done.append(name)
    if done:
        logger.info("Registered %s (%s) from %s", ", ".join(done), decl.family, decl.path)
    return list(decl.dataset_names().values())


def register_declared_datasets(cfg: Any) -> list[str]:
    """Register the declaration files of ``cfg.DATASETS.REGISTER`` (paths relative to the
    working directory); returns the dataset names. Safe to call again with the same config."""
    files = cfg.DATASETS.REGISTER
    if isinstance(files, str):
        raise DeclarationError(
            "config",
            "DATASETS.REGISTER",
            f"got the string {files!r}",
            "a list of files: ('f.yaml',)",
        )
    return [name for path in files for name in register_declared(path)]
