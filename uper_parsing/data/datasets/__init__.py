"""Dataset loaders and registrations. Importing this package registers the builtin datasets."""

import functools

from .ade20k import register_all_ade20k
from .broden import load_broden, register_all_broden, register_multitask
from .cityscapes_panoptic import load_cityscapes_panoptic, register_all_cityscapes_panoptic
from .coco_panoptic import (
    load_coco_panoptic_json,
    panoptic_metadata,
    register_all_coco_panoptic,
    register_coco_panoptic,
)
from .declared import (
    DeclarationError,
    load_declaration,
    register_declared,
    register_declared_datasets,
)
from .paths import DATASETS_ENV, datasets_root
from .sem_seg import (
    check_sem_seg_metadata,
    distinct_colors,
    image_size,
    load_sem_seg,
    register_sem_seg,
)
from .synthetic import (
    SyntheticParams,
    register_synthetic_multitask,
    register_synthetic_panoptic,
    register_synthetic_scenes,
)

__all__ = [
    "DATASETS_ENV",
    "DeclarationError",
    "SyntheticParams",
    "check_sem_seg_metadata",
    "datasets_root",
    "distinct_colors",
    "image_size",
    "load_broden",
    "load_cityscapes_panoptic",
    "load_coco_panoptic_json",
    "load_declaration",
    "load_sem_seg",
    "panoptic_metadata",
    "register_all_ade20k",
    "register_all_broden",
    "register_all_cityscapes_panoptic",
    "register_all_coco_panoptic",
    "register_coco_panoptic",
    "register_declared",
    "register_declared_datasets",
    "register_multitask",
    "register_sem_seg",
    "register_synthetic_multitask",
    "register_synthetic_panoptic",
    "register_synthetic_scenes",
]


def _register_builtin() -> None:
    from ..catalog import DatasetCatalog

    if "ade20k_sem_seg_train" not in DatasetCatalog:
        register_all_ade20k()
    if "synthetic_scenes_sem_seg_train" not in DatasetCatalog:
        register_synthetic_scenes("synthetic_scenes")
    if "broden_multitask_train" not in DatasetCatalog:
        register_all_broden()
    if "synthetic_scenes_multitask_train" not in DatasetCatalog:
        register_synthetic_multitask("synthetic_scenes")
    if "coco_2017_train_panoptic" not in DatasetCatalog:
        register_all_coco_panoptic()
    if "cityscapes_fine_panoptic_train" not in DatasetCatalog:
        register_all_cityscapes_panoptic()
    if "synthetic_scenes_panoptic_train" not in DatasetCatalog:
        register_synthetic_panoptic("synthetic_scenes")
    _register_class_lists()


def _register_class_lists() -> None:
    """Metadata-only names (class lists of published checkpoints, no images): what a config's
    ``DATASETS.TRAIN`` names to build a model converted from such a checkpoint."""
    from ..catalog import MetadataCatalog
    from .broden_plus_categories import BRODEN_PLUS_METADATA_NAME, broden_plus_metadata

    fields = broden_plus_metadata()
    MetadataCatalog.get(BRODEN_PLUS_METADATA_NAME).set_lazy(
        **{key: functools.partial(_field, broden_plus_metadata, key) for key in fields}
    )


def _field(make, key: str):
    return make()[key]


_register_builtin()
