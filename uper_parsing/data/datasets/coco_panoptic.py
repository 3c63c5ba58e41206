"""Panoptic datasets in the COCO panoptic format, and the builtin COCO 2017 panoptic splits.

A COCO panoptic dataset is a JSON file (``images``, ``annotations`` with ``segments_info``,
``categories``), a folder of RGB-encoded segment-id PNGs, the images and optionally the Panoptic
FPN semantic maps made by ``datasets/prepare_panoptic_fpn.py``. ``panoptic_metadata`` turns a
COCO-style ``categories`` list into the metadata of docs/ARCHITECTURE.md ("Panoptic contracts");
``load_coco_panoptic_json`` builds the dataset dicts (with contiguous category ids) and
``register_coco_panoptic`` registers a user's own data. Registration reads nothing from disk.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..catalog import DatasetCatalog, MetadataCatalog
from .coco_panoptic_categories import COCO_PANOPTIC_CATEGORIES
from .paths import datasets_root
from .sem_seg import distinct_colors

__all__ = [
    "COCO_PANOPTIC_SPLITS",
    "PANOPTIC_EVALUATOR",
    "PathOrFn",
    "load_coco_panoptic_json",
    "load_panoptic_dicts",
    "panoptic_metadata",
    "register_all_coco_panoptic",
    "register_coco_panoptic",
    "set_panoptic_metadata",
]

logger = logging.getLogger(__name__)

PANOPTIC_EVALUATOR = "coco_panoptic_seg"
README_HINT = "see datasets/README.md for the expected layout"
# A path, or a function returning one when called (evaluated at load / metadata-read time).
PathOrFn = str | os.PathLike | Callable[[], "str | os.PathLike | None"]
ImageFileFn = Callable[[Mapping[str, Any], Mapping[str, Any]], str]

COCO_DIRNAME = "coco"
COCO_PANOPTIC_SPLITS = {
    "coco_2017_train_panoptic": "train",
    "coco_2017_val_panoptic": "val",
}


def panoptic_metadata(categories: Sequence[Mapping[str, Any]], where: str = "") -> dict[str, Any]:
    """The category part of a panoptic dataset's metadata, from a COCO-style ``categories`` list.

    Args:
        categories: ``[{"id": int, "name": str, "isthing": 0/1, "color": [R, G, B]}]``; ``color``
            may be absent (distinct colours are generated, per group).
        where: what the list belongs to, for error messages (a file or dataset name).

    Returns:
        dict with ``categories`` (a copy), ``thing_classes`` / ``thing_colors`` (K_th, in list
        order), ``stuff_classes`` / ``stuff_colors`` (K_st, stuff only),
        ``thing_dataset_id_to_contiguous_id`` ({dataset id: 0..K_th-1}) and
        ``stuff_dataset_id_to_contiguous_id`` ({dataset id: 0..K_st-1}).

    Raises:
        ValueError: the list is empty, an entry lacks ``id`` / ``name`` / ``isthing``, an id is
            repeated, ``isthing`` is not 0 / 1 or a colour is not an RGB triple (the message names
            the category id).
    """
    ctx = f"categories of {where}" if where else "categories"
    if not categories or isinstance(categories, (str, Mapping)):
        raise ValueError(f"{ctx}: expected a non-empty list of {{id, name, isthing, color}} dicts")
    groups: dict[bool, dict[str, list]] = {
        True: {"ids": [], "names": [], "colors": []},
        False: {"ids": [], "names": [], "colors": []},
    }
    for cat in categories:
        for key in ("id", "name", "isthing"):
            if key not in cat:
                raise ValueError(f"{ctx}: category {dict(cat)} has no '{key}'")
        cid = int(cat["id"])
        if any(cid in g["ids"] for g in groups.values()):
            raise ValueError(f"{ctx}: category id {cid} appears twice; ids must be unique")
        if cat["isthing"] not in (0, 1):
            raise ValueError(f"{ctx}: category id {cid} has isthing={cat['isthing']!r}, not 0 / 1")
        color = cat.get("color")
        if color is not None and (len(color) != 3 or not all(0 <= int(v) <= 255 for v in color)):
            raise ValueError(f"{ctx}: category id {cid} has color {color!r}, not an RGB triple")
        group = groups[bool(cat["isthing"])]
        group["ids"].append(cid)
        group["names"].append(str(cat["name"]))
        group["colors"].append(None if color is None else tuple(int(v) for v in color))
    meta: dict[str, Any] = {"categories": [dict(c) for c in categories]}
    for isthing, prefix in ((True, "thing"), (False, "stuff")):
        group = groups[isthing]
        generated = distinct_colors(len(group["ids"]))
        meta[f"{prefix}_classes"] = group["names"]
        meta[f"{prefix}_colors"] = [c or g for c, g in zip(group["colors"], generated)]
        meta[f"{prefix}_dataset_id_to_contiguous_id"] = {d: i for i, d in enumerate(group["ids"])}
    return meta


def _categories_of(metadata: Mapping[str, Any] | Any, where: str) -> list[dict]:
    """The ``categories`` of a metadata dict or ``Metadata`` object."""
    cats = metadata.get("categories") if hasattr(metadata, "get") else None
    if cats is None:
        raise ValueError(f"metadata of {where} has no 'categories' (a COCO-style list)")
    return list(cats)


def _resolve(path: PathOrFn | None) -> str | None:
    """A path given as such or as a zero-argument function."""
    if callable(path):
        path = path()
    return None if path is None else os.fspath(path)


def _require(path: str, kind: str, is_dir: bool) -> None:
    exists = os.path.isdir(path) if is_dir else os.path.isfile(path)
    if not exists:
        raise FileNotFoundError(f"{kind} not found: {path} ({README_HINT})")


def _contiguous_segment(
    seg: Mapping[str, Any], meta: Mapping[str, Any], json_file: str, png: str
) -> dict[str, Any]:
    """One JSON segment with its dataset category id replaced by the contiguous id."""
    where = f"{json_file}: segment of {png}"
    for key in ("id", "category_id", "area", "bbox"):
        if key not in seg:
            raise ValueError(f"{where} has no '{key}': {dict(seg)}")
    cat = int(seg["category_id"])
    things = meta["thing_dataset_id_to_contiguous_id"]
    stuff = meta["stuff_dataset_id_to_contiguous_id"]
    if cat not in things and cat not in stuff:
        raise ValueError(
            f"{where} (segment id {seg['id']}) has category_id {cat}, which is not in the "
            f"metadata's categories (ids {sorted([*things, *stuff])})"
        )
    isthing = cat in things
    return {
        "id": int(seg["id"]),
        "category_id": things[cat] if isthing else stuff[cat],
        "isthing": isthing,
        "iscrowd": int(seg.get("iscrowd", 0)),
        "area": int(seg["area"]),
        "bbox": list(seg["bbox"]),
    }


def _check_json_categories(
    data: Mapping[str, Any], meta: Mapping[str, Any], json_file: str
) -> None:
    """Every JSON category the metadata also lists must agree with it on ``isthing``."""
    things = meta["thing_dataset_id_to_contiguous_id"]
    stuff = meta["stuff_dataset_id_to_contiguous_id"]
    for cat in data.get("categories", []):
        cid = int(cat["id"])
        if cid not in things and cid not in stuff:
            continue
        if "isthing" in cat and bool(cat["isthing"]) != (cid in things):
            raise ValueError(
                f"{json_file}: category id {cid} ('{cat.get('name')}') has isthing="
                f"{cat['isthing']} but the metadata lists it as "
                f"{'a thing' if cid in things else 'stuff'} (isthing={int(cid in things)})"
            )


def load_panoptic_dicts(
    json_file: str,
    panoptic_root: str,
    categories: Sequence[Mapping[str, Any]],
    image_file: ImageFileFn,
    sem_seg_root: str | None = None,
) -> list[dict]:
    """Dataset dicts of a COCO-format panoptic JSON (COCO's, Cityscapes' ...);
    ``image_file(image, annotation)`` gives the path of an image from its JSON ``images`` entry
    and its annotation (see ``load_coco_panoptic_json``).
    """
    _require(json_file, "Panoptic JSON file", is_dir=False)
    _require(panoptic_root, "Panoptic PNG folder", is_dir=True)
    if sem_seg_root is not None:
        _require(sem_seg_root, "Panoptic semantic-map folder", is_dir=True)
    meta = panoptic_metadata(categories, where=f"the metadata used to read {json_file}")
    with open(json_file) as f:
        data = json.load(f)
    _check_json_categories(data, meta, json_file)
    images = {img["id"]: img for img in data["images"]}
    dicts = []
    for ann in data["annotations"]:
        png = ann["file_name"]
        if ann["image_id"] not in images:
            raise ValueError(
                f"{json_file}: annotation {png} has image_id {ann['image_id']!r}, which is not in "
                "the JSON's 'images'"
            )
        image = images[ann["image_id"]]
        segments = [_contiguous_segment(s, meta, json_file, png) for s in ann["segments_info"]]
        seen: set[int] = set()
        for seg in segments:
            if seg["id"] in seen:
                raise ValueError(
                    f"{json_file}: segment id {seg['id']} appears twice in the segments_info of "
                    f"{png} (image id {ann['image_id']!r}); segment ids must be unique per image"
                )
            seen.add(seg["id"])
        for key in ("height", "width"):
            if key not in image:
                raise ValueError(f"{json_file}: image {image.get('file_name')} has no '{key}'")
        record = {
            "file_name": image_file(image, ann),
            "image_id": ann["image_id"],
            "height": int(image["height"]),
            "width": int(image["width"]),
            "pan_seg_file_name": os.path.join(panoptic_root, png),
            "segments_info": segments,
        }
        if sem_seg_root is not None:
            record["sem_seg_file_name"] = os.path.join(sem_seg_root, png)
        dicts.append(record)
    logger.info("Loaded %d panoptic annotations from %s", len(dicts), json_file)
    return dicts


def load_coco_panoptic_json(
    json_file: str | os.PathLike,
    image_root: str | os.PathLike,
    panoptic_root: str | os.PathLike,
    metadata: Mapping[str, Any] | Any,
    sem_seg_root: str | os.PathLike | None = None,
) -> list[dict]:
    """Read a COCO panoptic JSON into dataset dicts (docs/ARCHITECTURE.md, "Panoptic contracts").

    Args:
        json_file: the COCO panoptic JSON.
        image_root: folder of the images (``images[*].file_name`` is relative to it).
        panoptic_root: folder of the panoptic PNGs (``annotations[*].file_name``).
        metadata: a dict (or ``Metadata``) with ``categories``, a COCO-style list.
        sem_seg_root: folder of the Panoptic FPN semantic maps (same file names as the PNGs), or
            None to derive them from the PNGs when read.

    Returns:
        One dict per annotation, in JSON order: ``file_name``, ``image_id`` (the JSON's),
        ``height``, ``width``, ``pan_seg_file_name``, ``segments_info`` (``id``, ``category_id``
        = contiguous id within its group, ``isthing``, ``iscrowd``, ``area``, ``bbox`` XYWH as in
        the JSON) and, with ``sem_seg_root``, ``sem_seg_file_name``. No PNG is read.

    Raises:
        FileNotFoundError: the JSON or a folder does not exist.
        ValueError: a segment's category is not in the metadata, a JSON category disagrees with
            the metadata on ``isthing``, an annotation's image is not in ``images``, or a segment
            id repeats within an image (messages name the JSON file, the PNG and the id).
    """
    image_root = os.fspath(image_root)

    def image_file(image: Mapping[str, Any], ann: Mapping[str, Any]) -> str:
        return os.path.join(image_root, image["file_name"])

    return load_panoptic_dicts(
        os.fspath(json_file),
        os.fspath(panoptic_root),
        _categories_of(metadata, f"the dataset of {os.fspath(json_file)}"),
        image_file,
        None if sem_seg_root is None else os.fspath(sem_seg_root),
    )


def _load_registered(
    json_file: PathOrFn,
    image_root: PathOrFn,
    panoptic_root: PathOrFn,
    categories: list[dict],
    sem_seg_root: PathOrFn | None,
    prepare: Callable[[], Any] | None,
) -> list[dict]:
    if prepare is not None:
        prepare()
    return load_coco_panoptic_json(
        _resolve(json_file),
        _resolve(image_root),
        _resolve(panoptic_root),
        {"categories": categories},
        _resolve(sem_seg_root),
    )


def set_panoptic_metadata(name: str, static: Mapping[str, Any], **lazy: PathOrFn | None) -> None:
    """Set a panoptic dataset's metadata: ``evaluator_type`` "coco_panoptic_seg", ``ignore_label``
    255 and ``static`` as they are; each of ``lazy`` as a path string (or None) or, when given as
    a function, lazily (the function is called at each read, so it must be picklable)."""
    metadata = MetadataCatalog.get(name).set(
        **{"evaluator_type": PANOPTIC_EVALUATOR, "ignore_label": 255, **static}
    )
    for key, value in lazy.items():
        if callable(value):
            metadata.set_lazy(**{key: value})
        else:
            metadata.set(**{key: None if value is None else os.fspath(value)})


def register_coco_panoptic(
    name: str,
    metadata: Mapping[str, Any],
    image_root: PathOrFn,
    panoptic_root: PathOrFn,
    panoptic_json: PathOrFn,
    sem_seg_root: PathOrFn | None = None,
    *,
    prepare: Callable[[], Any] | None = None,
) -> None:
    """Register a panoptic dataset in the COCO panoptic format (e.g. one's own data).

    Args:
        name: dataset name, e.g. "my_panoptic_train".
        metadata: at least ``categories`` (``[{"id", "name", "isthing", "color"}]``, the single
            source of the class lists and id maps, see ``panoptic_metadata``); other keys pass
            through into the metadata.
        image_root / panoptic_root / panoptic_json / sem_seg_root: as for
            ``load_coco_panoptic_json``; each may also be a function returning the path, called
            when the data is loaded or the metadata read (e.g. to follow ``UPER_PARSING_DATASETS``).
        prepare: called (no arguments) before each load, e.g. to generate or check the data.

    Sets the metadata of "Panoptic contracts": the category keys, ``evaluator_type``
    "coco_panoptic_seg", ``ignore_label`` 255, ``image_root``, ``panoptic_root``,
    ``panoptic_json``, ``sem_seg_root`` (None when absent). Nothing is read until
    ``DatasetCatalog.get(name)``; the JSON is then checked (see ``load_coco_panoptic_json``).
    """
    categories = _categories_of(metadata, f"dataset '{name}'")
    meta = {**dict(metadata), **panoptic_metadata(categories, where=f"dataset '{name}'")}
    DatasetCatalog.register(
        name,
        functools.partial(
            _load_registered,
            panoptic_json,
            image_root,
            panoptic_root,
            meta["categories"],
            sem_seg_root,
            prepare,
        ),
    )
    set_panoptic_metadata(
        name,
        meta,
        image_root=image_root,
        panoptic_root=panoptic_root,
        panoptic_json=panoptic_json,
        sem_seg_root=sem_seg_root,
    )


# ----------------------------------------------------------------------------- builtin COCO 2017


def _coco_path(rel: str) -> str:
    """``$UPER_PARSING_DATASETS/coco/<rel>`` at the time of the call."""
    return str(Path(datasets_root()) / COCO_DIRNAME / rel)


def _coco_sem_seg_root(split: str) -> str | None:
    """``coco/panoptic_semseg_<split>2017`` when it exists (made by prepare_panoptic_fpn.py)."""
    path = _coco_path(f"panoptic_semseg_{split}2017")
    return path if os.path.isdir(path) else None


def _coco_instances_json(split: str) -> str | None:
    """``coco/annotations/instances_<split>2017.json`` when it exists: box and mask AP are then
    scored against COCO's instance annotations, as detectron2 does, not the panoptic PNGs."""
    path = _coco_path(f"annotations/instances_{split}2017.json")
    return path if os.path.isfile(path) else None


def _check_coco_root(split: str) -> None:
    root = _coco_path("")
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"COCO folder not found: {root} (set UPER_PARSING_DATASETS to the folder holding "
            f"coco/; {README_HINT}, section 'COCO panoptic')"
        )
    _require(_coco_path(f"{split}2017"), f"COCO {split} image folder", is_dir=True)


def register_all_coco_panoptic() -> None:
    """Register ``coco_2017_train_panoptic`` / ``coco_2017_val_panoptic``.

    Layout under ``$UPER_PARSING_DATASETS/coco``: ``{train,val}2017/`` images,
    ``annotations/panoptic_{train,val}2017.json``, ``panoptic_{train,val}2017/`` PNGs and, when
    ``datasets/prepare_panoptic_fpn.py`` has made them, ``panoptic_semseg_{train,val}2017/``
    (without them the semantic maps are derived from the PNGs when read). Box and mask AP use
    ``annotations/instances_{train,val}2017.json`` when present (metadata ``instances_json``).
    """
    for name, split in COCO_PANOPTIC_SPLITS.items():
        register_coco_panoptic(
            name,
            {"categories": COCO_PANOPTIC_CATEGORIES},
            image_root=functools.partial(_coco_path, f"{split}2017"),
            panoptic_root=functools.partial(_coco_path, f"panoptic_{split}2017"),
            panoptic_json=functools.partial(_coco_path, f"annotations/panoptic_{split}2017.json"),
            sem_seg_root=functools.partial(_coco_sem_seg_root, split),
            prepare=functools.partial(_check_coco_root, split),
        )
        MetadataCatalog.get(name).set_lazy(
            instances_json=functools.partial(_coco_instances_json, split)
        )
