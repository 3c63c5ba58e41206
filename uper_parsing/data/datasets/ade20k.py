"""Builtin ADE20K SceneParsing (150 classes) in its released layout.

``$UPER_PARSING_DATASETS/ADEChallengeData2016/{images,annotations}/{training,validation}``; the root
is read when the dataset is loaded, so registration touches no disk.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

from ..catalog import DatasetCatalog, MetadataCatalog
from .ade20k_categories import ADE20K_SEM_SEG_CLASSES, ADE20K_SEM_SEG_COLORS
from .paths import datasets_root
from .sem_seg import load_sem_seg

__all__ = ["register_all_ade20k", "register_ade_style", "ADE20K_SPLITS"]

ADE20K_DIRNAME = "ADEChallengeData2016"
ADE20K_SPLITS = {"ade20k_sem_seg_train": "training", "ade20k_sem_seg_val": "validation"}


def _ade20k_dir(kind: str, split: str) -> str:
    """``$UPER_PARSING_DATASETS/ADEChallengeData2016/<kind>/<split>`` at the time of the call."""
    return str(Path(datasets_root()) / ADE20K_DIRNAME / kind / split)


def _load_ade20k(split: str) -> list[dict]:
    return load_sem_seg(
        _ade20k_dir("images", split), _ade20k_dir("annotations", split), ".jpg", ".png"
    )


def register_ade_style(
    name: str,
    load: Callable[[], list[dict]],
    *,
    classes: Sequence[str],
    colors: Sequence[Sequence[int]],
    image_root: Callable[[], str],
    sem_seg_root: Callable[[], str],
) -> None:
    """Register one split stored as ADE20K stores it (label 0 = unlabelled, v = class v - 1).

    ``image_root`` / ``sem_seg_root`` are functions, evaluated when the metadata is read, so that
    registration touches no disk and follows ``UPER_PARSING_DATASETS`` at load time.
    """
    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        stuff_classes=list(classes),
        stuff_colors=list(colors),
        ignore_label=255,
        reduce_zero_label=True,
        evaluator_type="sem_seg",
    ).set_lazy(image_root=image_root, sem_seg_root=sem_seg_root)


def register_all_ade20k() -> None:
    """Register ``ade20k_sem_seg_train`` / ``ade20k_sem_seg_val`` and their metadata."""
    for name, split in ADE20K_SPLITS.items():
        register_ade_style(
            name,
            functools.partial(_load_ade20k, split),
            classes=ADE20K_SEM_SEG_CLASSES,
            colors=ADE20K_SEM_SEG_COLORS,
            image_root=functools.partial(_ade20k_dir, "images", split),
            sem_seg_root=functools.partial(_ade20k_dir, "annotations", split),
        )
