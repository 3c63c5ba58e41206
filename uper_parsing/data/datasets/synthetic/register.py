"""Registration of synthetic scene sets (lazy: nothing is generated until a dataset is loaded)."""

from __future__ import annotations

import functools
from pathlib import Path

from ...catalog import DatasetCatalog, MetadataCatalog
from ...multitask_utils import multitask_metadata
from ..ade20k import register_ade_style
from ..broden import load_broden
from ..coco_panoptic import register_coco_panoptic
from ..paths import datasets_root
from ..sem_seg import load_sem_seg
from .broden_writer import (
    BRODEN_SUBDIR,
    synthetic_broden_classes,
    synthetic_part_hierarchy,
    synthetic_sources,
)
from .coco_panoptic_writer import PANOPTIC_SUBDIR, synthetic_panoptic_categories
from .generate import SyntheticParams, prepare_synthetic_scenes
from .spec import SYNTHETIC_CLASS_COLORS, SYNTHETIC_CLASS_NAMES
from .writers import ADE_SPLIT_DIRS

__all__ = [
    "DEFAULT_SYNTHETIC_PARAMS",
    "register_synthetic_multitask",
    "register_synthetic_panoptic",
    "register_synthetic_scenes",
    "synthetic_folder",
    "synthetic_multitask_metadata",
]

# The builtin set: all layouts in one folder, so the semantic, multi-task and panoptic
# registrations share one generated set (the ADE files are the same bytes as with formats=("ade",)).
DEFAULT_SYNTHETIC_PARAMS = SyntheticParams(formats=("ade", "broden", "coco_panoptic"))


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
        params: generation parameters (default ``DEFAULT_SYNTHETIC_PARAMS``: 128 px, 600 / 100
            images, ADE, Broden and COCO panoptic layouts).
        dirname: folder under ``$UPER_PARSING_DATASETS`` (default: ``prefix``).

    Returns:
        The registered names.
    """
    params = params or DEFAULT_SYNTHETIC_PARAMS
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


def _broden_dir(dirname: str) -> str:
    return str(synthetic_folder(dirname) / BRODEN_SUBDIR)


def _load_multitask(dirname: str, params: SyntheticParams, split: str) -> list[dict]:
    prepare_synthetic_scenes(synthetic_folder(dirname), params)
    return load_broden(_broden_dir(dirname), split)


def synthetic_multitask_metadata(params: SyntheticParams, split: str) -> dict:
    """Multi-task metadata of a synthetic split (from the spec and ``params``; no disk)."""
    num = params.num_train if split == "train" else params.num_val
    return multitask_metadata(
        classes=synthetic_broden_classes(),
        part_hierarchy=synthetic_part_hierarchy(),
        sources=synthetic_sources(num, split),
        object_colors=SYNTHETIC_CLASS_COLORS,
        where="synthetic scenes",
    )


def register_synthetic_multitask(
    prefix: str = "synthetic_scenes",
    *,
    params: SyntheticParams | None = None,
    dirname: str | None = None,
) -> list[str]:
    """Register ``<prefix>_multitask_train`` / ``<prefix>_multitask_val`` (Broden-style layout
    under ``<dirname>/broden``; sources "scenes", "materials" (train) and "textures").

    Args:
        prefix / params / dirname: as for ``register_synthetic_scenes``; ``params.formats`` must
            hold "broden". Use the same params as the semantic registration of the same folder.

    Returns:
        The registered names.
    """
    params = params or DEFAULT_SYNTHETIC_PARAMS
    dirname = dirname or prefix
    if "broden" not in params.formats:
        raise ValueError("Synthetic multi-task datasets are read from the 'broden' format")
    names = []
    for split in ("train", "val"):
        name = f"{prefix}_multitask_{split}"
        DatasetCatalog.register(name, functools.partial(_load_multitask, dirname, params, split))
        MetadataCatalog.get(name).set(**synthetic_multitask_metadata(params, split)).set_lazy(
            root=functools.partial(_broden_dir, dirname)
        )
        names.append(name)
    return names


def _panoptic_path(dirname: str, rel: str) -> str:
    """``$UPER_PARSING_DATASETS/<dirname>/coco_panoptic/<rel>`` at the time of the call."""
    return str(synthetic_folder(dirname) / PANOPTIC_SUBDIR / rel)


def _prepare(dirname: str, params: SyntheticParams) -> None:
    prepare_synthetic_scenes(synthetic_folder(dirname), params)


def register_synthetic_panoptic(
    prefix: str = "synthetic_scenes",
    *,
    params: SyntheticParams | None = None,
    dirname: str | None = None,
) -> list[str]:
    """Register ``<prefix>_panoptic_train`` / ``<prefix>_panoptic_val`` (COCO panoptic layout
    under ``<dirname>/coco_panoptic``, with precomputed Panoptic FPN semantic maps).

    The metadata (10 categories: 5 stuff, 5 things) comes from the spec, so it is available
    before anything is generated; the set is generated on the first load.

    Args:
        prefix / params / dirname: as for ``register_synthetic_scenes``; ``params.formats`` must
            hold "coco_panoptic". Use the same params as the other registrations of the folder.

    Returns:
        The registered names.
    """
    params = params or DEFAULT_SYNTHETIC_PARAMS
    dirname = dirname or prefix
    if "coco_panoptic" not in params.formats:
        raise ValueError("Synthetic panoptic datasets are read from the 'coco_panoptic' format")
    names = []
    for split in ("train", "val"):
        name = f"{prefix}_panoptic_{split}"
        register_coco_panoptic(
            name,
            {"categories": synthetic_panoptic_categories()},
            image_root=functools.partial(_panoptic_path, dirname, f"images/{split}"),
            panoptic_root=functools.partial(_panoptic_path, dirname, f"panoptic_{split}"),
            panoptic_json=functools.partial(_panoptic_path, dirname, f"panoptic_{split}.json"),
            sem_seg_root=functools.partial(_panoptic_path, dirname, f"panoptic_semseg_{split}"),
            prepare=functools.partial(_prepare, dirname, params),
        )
        names.append(name)
    return names
