"""Registration of synthetic scene sets (lazy: nothing is generated until a dataset is loaded)."""

from __future__ import annotations

import functools
from pathlib import Path

from ..ade20k import register_ade_style
from ..paths import datasets_root
from ..sem_seg import load_sem_seg
from .generate import SyntheticParams, prepare_synthetic_scenes
from .spec import SYNTHETIC_CLASS_COLORS, SYNTHETIC_CLASS_NAMES
from .writers import ADE_SPLIT_DIRS

__all__ = ["register_synthetic_scenes", "synthetic_folder"]


def synthetic_folder(dirname: str) -> Path:
    """``$UPER_PARSING_DATASETS/<dirname>`` at the time of the call."""
    return datasets_root() / dirname


def _ade_dir(dirname: str, kind: str, split: str) -> str:
    return str(synthetic_folder(dirname) / kind / ADE_SPLIT_DIRS[split])


def _load(dirname: str, params: SyntheticParams, split: str) -> list[dict]:
    prepare_synthetic_scenes(synthetic_folder(dirname), params)
    return load_sem_seg(
        _ade_dir(dirname, "images", split), _ade_dir(dirname, "annotations", split), ".jpg", ".png"
    )


def register_synthetic_scenes(
    prefix: str = "synthetic_scenes",
    *,
    params: SyntheticParams | None = None,
    dirname: str | None = None,
) -> list[str]:
    """Register ``<prefix>_sem_seg_train`` / ``<prefix>_sem_seg_val`` (ADE-style layout).

    Args:
        prefix: start of the dataset names.
        params: generation parameters (default ``SyntheticParams()``: 128 px, 600 / 100 images).
        dirname: folder under ``$UPER_PARSING_DATASETS`` (default: ``prefix``).

    Returns:
        The registered names.
    """
    params = params or SyntheticParams()
    dirname = dirname or prefix
    if "ade" not in params.formats:
        raise ValueError("Synthetic semantic datasets are read from the 'ade' format")
    names = []
    for split in ("train", "val"):
        name = f"{prefix}_sem_seg_{split}"
        register_ade_style(
            name,
            functools.partial(_load, dirname, params, split),
            classes=SYNTHETIC_CLASS_NAMES,
            colors=SYNTHETIC_CLASS_COLORS,
            image_root=functools.partial(_ade_dir, dirname, "images", split),
            sem_seg_root=functools.partial(_ade_dir, dirname, "annotations", split),
        )
        names.append(name)
    return names
