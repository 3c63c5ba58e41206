"""Builtin Cityscapes panoptic (fine annotations), as made by cityscapesscripts' createPanopticImgs.

Layout under ``$UPER_PARSING_DATASETS/cityscapes``::

    leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/cityscapes_panoptic_{train,val}.json
    gtFine/cityscapes_panoptic_{train,val}/<city>_<seq>_<frame>_gtFine_panoptic.png

Categories are the 19 evaluated Cityscapes classes (8 things with instances, 11 stuff), with the
label id as category id, as createPanopticImgs writes them (without ``--use-train-id``). The
categories come from ``cityscapesscripts.helpers.labels``, imported only when they are first
needed, so registration works without that package installed.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..catalog import DatasetCatalog
from .coco_panoptic import (
    README_HINT,
    load_panoptic_dicts,
    panoptic_metadata,
    set_panoptic_metadata,
)
from .paths import datasets_root

__all__ = [
    "CITYSCAPES_PANOPTIC_SPLITS",
    "cityscapes_panoptic_categories",
    "cityscapes_panoptic_metadata",
    "load_cityscapes_panoptic",
    "register_all_cityscapes_panoptic",
]

CITYSCAPES_DIRNAME = "cityscapes"
CITYSCAPES_PANOPTIC_SPLITS = {
    "cityscapes_fine_panoptic_train": "train",
    "cityscapes_fine_panoptic_val": "val",
}
_PANOPTIC_SUFFIX = "_gtFine_panoptic.png"
_IMAGE_SUFFIX = "_leftImg8bit.png"
_CATEGORY_KEYS = (
    "categories",
    "thing_classes",
    "thing_colors",
    "stuff_classes",
    "stuff_colors",
    "thing_dataset_id_to_contiguous_id",
    "stuff_dataset_id_to_contiguous_id",
)


def cityscapes_panoptic_categories() -> list[dict[str, Any]]:
    """The 19 evaluated Cityscapes classes as COCO panoptic categories.

    Returns:
        ``[{"id": label id, "name", "isthing": 1 if hasInstances else 0, "color": [R, G, B]}]`` in
        label-id order (the trainId order): 11 stuff and 8 things.
    """
    from cityscapesscripts.helpers.labels import labels

    return [
        {
            "id": int(label.id),
            "name": label.name,
            "isthing": int(label.hasInstances),
            "color": list(label.color),
        }
        for label in labels
        if not label.ignoreInEval
    ]


@functools.cache
def cityscapes_panoptic_metadata() -> dict[str, Any]:
    """``panoptic_metadata`` of ``cityscapes_panoptic_categories()`` (computed once)."""
    return panoptic_metadata(cityscapes_panoptic_categories(), where="Cityscapes panoptic")


def _metadata_value(key: str) -> Any:
    return cityscapes_panoptic_metadata()[key]


def _image_file(image_dir: str, image: Mapping[str, Any], ann: Mapping[str, Any]) -> str:
    """``<image_dir>/<city>/<stem>_leftImg8bit.png`` of ``<stem>_gtFine_panoptic.png``."""
    png = os.path.basename(ann["file_name"])
    if not png.endswith(_PANOPTIC_SUFFIX):
        raise ValueError(
            f"Cityscapes panoptic annotation {ann['file_name']} does not end with "
            f"{_PANOPTIC_SUFFIX}, as createPanopticImgs names them"
        )
    stem = png[: -len(_PANOPTIC_SUFFIX)]
    return os.path.join(image_dir, stem.split("_")[0], stem + _IMAGE_SUFFIX)


def load_cityscapes_panoptic(
    image_dir: str | os.PathLike,
    panoptic_root: str | os.PathLike,
    panoptic_json: str | os.PathLike,
) -> list[dict]:
    """Dataset dicts of one Cityscapes panoptic split.

    Args:
        image_dir: ``leftImg8bit/<split>`` (one sub-folder per city).
        panoptic_root: ``gtFine/cityscapes_panoptic_<split>``.
        panoptic_json: ``gtFine/cityscapes_panoptic_<split>.json``.

    Returns:
        Dicts as ``load_coco_panoptic_json`` returns (``image_id`` is the string
        ``<city>_<seq>_<frame>``; no ``sem_seg_file_name``: maps are derived when read).
    """
    return load_panoptic_dicts(
        os.fspath(panoptic_json),
        os.fspath(panoptic_root),
        cityscapes_panoptic_categories(),
        functools.partial(_image_file, os.fspath(image_dir)),
    )


def _cityscapes_path(rel: str) -> str:
    """``$UPER_PARSING_DATASETS/cityscapes/<rel>`` at the time of the call."""
    return str(Path(datasets_root()) / CITYSCAPES_DIRNAME / rel)


def _load_builtin(split: str) -> list[dict]:
    root = _cityscapes_path("")
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"Cityscapes folder not found: {root} (set UPER_PARSING_DATASETS to the folder "
            f"holding cityscapes/; {README_HINT}, section 'Cityscapes panoptic')"
        )
    return load_cityscapes_panoptic(
        _cityscapes_path(f"leftImg8bit/{split}"),
        _cityscapes_path(f"gtFine/cityscapes_panoptic_{split}"),
        _cityscapes_path(f"gtFine/cityscapes_panoptic_{split}.json"),
    )


def register_all_cityscapes_panoptic() -> None:
    """Register ``cityscapes_fine_panoptic_train`` / ``_val``; the category metadata is computed
    when first read (so cityscapesscripts is imported only then)."""
    for name, split in CITYSCAPES_PANOPTIC_SPLITS.items():
        DatasetCatalog.register(name, functools.partial(_load_builtin, split))
        set_panoptic_metadata(
            name,
            {},
            image_root=functools.partial(_cityscapes_path, f"leftImg8bit/{split}"),
            panoptic_root=functools.partial(
                _cityscapes_path, f"gtFine/cityscapes_panoptic_{split}"
            ),
            panoptic_json=functools.partial(
                _cityscapes_path, f"gtFine/cityscapes_panoptic_{split}.json"
            ),
            sem_seg_root=None,
            **{key: functools.partial(_metadata_value, key) for key in _CATEGORY_KEYS},
        )
