"""Semantic-segmentation datasets stored as image files + label PNGs, paired by file name.

``load_sem_seg`` builds the dataset dicts; ``register_sem_seg`` registers a user's own data with
checked metadata. ADE20K and the synthetic scenes are read through the same loader.
"""

from __future__ import annotations

import colorsys
import functools
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from ..catalog import DatasetCatalog, MetadataCatalog

__all__ = [
    "load_sem_seg",
    "register_sem_seg",
    "distinct_colors",
    "check_sem_seg_metadata",
    "image_size",
]

logger = logging.getLogger(__name__)

_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def _list_files(root: Path, ext: str) -> dict[str, Path]:
    """{relative path without extension: path} of the files under ``root`` ending with ``ext``."""
    if not root.is_dir():
        raise FileNotFoundError(f"Dataset folder not found: {root}")
    files = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name.endswith(ext) and not name.startswith("."):
                path = Path(dirpath) / name
                files[str(path.relative_to(root))[: -len(ext)]] = path
    return files


def image_size(file_name: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image read from its header only (EXIF rotation applied, as cv2).

    Raises:
        OSError naming the file when its header cannot be read (missing, not an image, cut).
    """
    try:
        with Image.open(file_name) as im:
            width, height = im.size
            exif = im.getexif() if im.format == "JPEG" else {}
    except OSError as err:
        raise OSError(f"Cannot read the header of image {os.fspath(file_name)}: {err}") from err
    if exif.get(_EXIF_ORIENTATION) in _TRANSPOSED_ORIENTATIONS:
        width, height = height, width
    return height, width


def _missing_error(kind: str, stems: list[str], root: Path, ext: str, other: Path) -> ValueError:
    shown = ", ".join(str(root / f"{s}{ext}") for s in stems[:5])
    more = f" (and {len(stems) - 5} more)" if len(stems) > 5 else ""
    return ValueError(
        f"{len(stems)} {kind} file(s) missing: {shown}{more}; each file in {other} needs one"
    )


def load_sem_seg(
    image_root: str | os.PathLike,
    label_root: str | os.PathLike,
    image_ext: str = ".jpg",
    label_ext: str = ".png",
) -> list[dict]:
    """Pair images and label files by their path relative to the roots, without extension.

    Args:
        image_root: folder of images (searched recursively).
        label_root: folder of label files with the same relative names.
        image_ext / label_ext: file endings of images and labels.

    Returns:
        One dict per image, sorted by name: ``file_name``, ``sem_seg_file_name``, ``height``,
        ``width`` (read from the image header) and ``image_id`` (the relative name).

    Raises:
        FileNotFoundError: a root folder does not exist.
        ValueError: an image has no label file or a label file has no image (named in the message).
    """
    image_root, label_root = Path(image_root), Path(label_root)
    images = _list_files(image_root, image_ext)
    labels = _list_files(label_root, label_ext)
    no_label = sorted(set(images) - set(labels))
    if no_label:
        raise _missing_error("label", no_label, label_root, label_ext, image_root)
    no_image = sorted(set(labels) - set(images))
    if no_image:
        raise _missing_error("image", no_image, image_root, image_ext, label_root)
    dicts = []
    for stem in sorted(images):
        height, width = image_size(images[stem])
        dicts.append(
            {
                "file_name": str(images[stem]),
                "sem_seg_file_name": str(labels[stem]),
                "height": height,
                "width": width,
                "image_id": stem,
            }
        )
    logger.info("Loaded %d images with semantic labels from %s", len(dicts), image_root)
    return dicts


def distinct_colors(n: int) -> list[tuple[int, int, int]]:
    """``n`` well separated RGB colours (golden-ratio hue steps, alternating brightness)."""
    colors = []
    for i in range(n):
        hue = (i * 0.618033988749895) % 1.0
        sat = 0.65 + 0.35 * ((i // 2) % 2)
        val = 0.95 if i % 2 == 0 else 0.7
        r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
        colors.append((round(r * 255), round(g * 255), round(b * 255)))
    return colors


def check_sem_seg_metadata(metadata: Mapping[str, Any], name: str = "") -> dict[str, Any]:
    """Validate and complete semantic metadata; returns a new dict.

    Checks: ``stuff_classes`` is a non-empty list of strings; ``stuff_colors`` (generated when
    absent) has one RGB triple per class; ``ignore_label`` is an int (default 255) that is not a
    class id; at most one of ``reduce_zero_label`` / ``label_id_map``; every ``label_id_map`` target
    is a class id or the ignore label.
    """
    meta = dict(metadata)
    where = f"metadata of dataset '{name}'"
    classes = meta.get("stuff_classes")
    if not classes or isinstance(classes, str) or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"{where}: stuff_classes must be a non-empty list of names")
    meta["stuff_classes"] = list(classes)
    num = len(classes)
    colors = meta.get("stuff_colors") or distinct_colors(num)
    if len(colors) != num or any(len(c) != 3 for c in colors):
        raise ValueError(
            f"{where}: stuff_colors has {len(colors)} entries for {num} stuff_classes "
            "(one RGB triple per class is needed)"
        )
    meta["stuff_colors"] = [tuple(int(v) for v in c) for c in colors]
    ignore = int(meta.get("ignore_label", 255))
    if 0 <= ignore < num:
        raise ValueError(f"{where}: ignore_label {ignore} is also a class id (0..{num - 1})")
    meta["ignore_label"] = ignore
    meta["reduce_zero_label"] = bool(meta.get("reduce_zero_label", False))
    if meta.get("label_id_map"):
        if meta["reduce_zero_label"]:
            raise ValueError(f"{where}: set either reduce_zero_label or label_id_map, not both")
        meta["label_id_map"] = _check_id_map(meta["label_id_map"], num, ignore, where)
    else:
        meta.pop("label_id_map", None)
    meta.setdefault("evaluator_type", "sem_seg")
    return meta


def _check_id_map(id_map: Mapping[Any, Any], num: int, ignore: int, where: str) -> dict[int, int]:
    out = {}
    for stored, train_id in id_map.items():
        stored, train_id = int(stored), int(train_id)
        if stored < 0 or stored > 65535:
            raise ValueError(f"{where}: label_id_map key {stored} is not a 16-bit label value")
        if not (0 <= train_id < num or train_id == ignore):
            raise ValueError(
                f"{where}: label_id_map maps {stored} -> {train_id}, outside the class ids "
                f"0..{num - 1} and the ignore_label {ignore}"
            )
        out[stored] = train_id
    return out


def register_sem_seg(
    name: str,
    *,
    image_root: str | os.PathLike,
    label_root: str | os.PathLike,
    metadata: Mapping[str, Any],
    image_ext: str = ".jpg",
    label_ext: str = ".png",
) -> None:
    """Register a semantic dataset of one's own: images + label PNGs paired by name.

    Args:
        name: dataset name, e.g. "my_data_train".
        image_root / label_root: folders of images and label files.
        metadata: at least ``stuff_classes``; optionally ``stuff_colors`` (RGB, generated when
            absent), ``ignore_label`` (255), ``reduce_zero_label`` or ``label_id_map``
            ({stored value: train id}, unmapped values become the ignore label).
        image_ext / label_ext: file endings.

    Nothing is read from disk until ``DatasetCatalog.get(name)``.
    """
    meta = check_sem_seg_metadata(metadata, name)
    DatasetCatalog.register(
        name, functools.partial(load_sem_seg, image_root, label_root, image_ext, label_ext)
    )
    MetadataCatalog.get(name).set(image_root=str(image_root), sem_seg_root=str(label_root), **meta)
