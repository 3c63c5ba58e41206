"""Datasets, label reading, augmentation, mappers, samplers and loaders.

Importing this package registers the builtin datasets (ADE20K, Broden, synthetic scenes); nothing
is read from disk until a dataset is loaded.
"""

from . import datasets  # noqa: F401  (registers the builtin datasets)
from .build import (
    SKIPPED_KEY,
    MapDataset,
    SerializedList,
    TrainLoader,
    TrainStream,
    build_multitask_train_loader,
    build_test_loader,
    build_train_loader,
    get_dataset_dicts,
    train_stream,
    trivial_batch_collator,
    worker_init_reset_seed,
)
from .catalog import DatasetCatalog, Metadata, MetadataCatalog
from .datasets import (
    SyntheticParams,
    load_broden,
    load_sem_seg,
    register_multitask,
    register_sem_seg,
    register_synthetic_multitask,
    register_synthetic_scenes,
)
from .mappers import (
    MAPPER_REGISTRY,
    MultiTaskDatasetMapper,
    PanopticDatasetMapper,
    SemSegDatasetMapper,
    build_mapper,
)
from .multitask_utils import MULTITASK_TASKS, multitask_metadata, read_multitask_label
from .panoptic_utils import (
    id2rgb,
    panoptic_instances,
    panoptic_semantic,
    read_panoptic,
    read_panoptic_semantic,
    rgb2id,
)
from .readers import (
    TruncatedImageError,
    check_image_size,
    label_lookup_table,
    read_image,
    read_sem_seg,
)
from .samplers import InferenceSampler, SourceBatchSampler, TrainingSampler
from .transforms import (
    PadTo,
    PhotometricDistortion,
    RandomCropCategoryArea,
    ResizeRatioRange,
    ResizeShortestEdge,
    apply_transforms,
    build_augmentation,
)

__all__ = [
    "SKIPPED_KEY",
    "TrainLoader",
    "TrainStream",
    "TruncatedImageError",
    "train_stream",
    "DatasetCatalog",
    "InferenceSampler",
    "MAPPER_REGISTRY",
    "MULTITASK_TASKS",
    "MapDataset",
    "Metadata",
    "MetadataCatalog",
    "MultiTaskDatasetMapper",
    "PadTo",
    "PanopticDatasetMapper",
    "PhotometricDistortion",
    "RandomCropCategoryArea",
    "ResizeRatioRange",
    "ResizeShortestEdge",
    "SemSegDatasetMapper",
    "SerializedList",
    "SourceBatchSampler",
    "SyntheticParams",
    "TrainingSampler",
    "apply_transforms",
    "build_augmentation",
    "build_mapper",
    "build_multitask_train_loader",
    "build_test_loader",
    "build_train_loader",
    "check_image_size",
    "get_dataset_dicts",
    "id2rgb",
    "label_lookup_table",
    "load_broden",
    "load_sem_seg",
    "multitask_metadata",
    "panoptic_instances",
    "panoptic_semantic",
    "read_image",
    "read_multitask_label",
    "read_panoptic",
    "read_panoptic_semantic",
    "read_sem_seg",
    "register_multitask",
    "register_sem_seg",
    "register_synthetic_multitask",
    "register_synthetic_scenes",
    "rgb2id",
    "trivial_batch_collator",
    "worker_init_reset_seed",
]
