"""``SemSegDatasetMapper``: image + semantic label file -> augmented model input."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from ...config import configurable
from ..catalog import MetadataCatalog
from ..detection_utils import check_image_size, read_image, read_sem_seg
from ..transforms import apply_transforms, build_augmentation
from .build import MAPPER_REGISTRY

__all__ = ["SemSegDatasetMapper"]


def check_num_classes(num_classes: int, dataset_name: str) -> None:
    """Stop before training when the model's class count differs from the dataset's, instead of
    failing later inside the loss (a device-side assert on CUDA)."""
    classes = MetadataCatalog.get(dataset_name).get("stuff_classes", None)
    if classes is not None and len(classes) != num_classes:
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {num_classes} but dataset '{dataset_name}' has "
            f"{len(classes)} classes (metadata stuff_classes); set "
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES {len(classes)}"
        )


@MAPPER_REGISTRY.register(name="sem_seg")
class SemSegDatasetMapper:
    """Read an image (and, when training, its labels through ``read_sem_seg``) and augment both
    with one joint transform.

    Output dict (a deep copy of the input plus):
        ``image``: Tensor (3, H, W) uint8 in ``image_format``, after augmentation.
        ``sem_seg`` (training only): Tensor (H, W) int64 train ids (ignore = metadata's).
        ``height`` / ``width``: the original image size (what results are returned at).
    """

    @configurable
    def __init__(
        self,
        is_train: bool = True,
        *,
        augmentations: v2.Transform | Sequence[v2.Transform] | None,
        image_format: str = "RGB",
        metadata: Any = None,
        check_labels: bool = True,
    ) -> None:
        """
        Args:
            is_train: read and transform labels (True) or only the image (False).
            augmentations: joint transform (or list of them) over image + label maps.
            image_format: "RGB" or "BGR" channel order of ``image``.
            metadata: the dataset's ``Metadata`` (label mapping, classes, ignore label); needed
                when ``is_train``.
            check_labels: check that images and labels have the size the dataset dict says.
        """
        if is_train and metadata is None:
            raise ValueError("A training SemSegDatasetMapper needs the dataset's metadata")
        if isinstance(augmentations, Sequence):
            augmentations = v2.Compose(list(augmentations))
        self.is_train = is_train
        self.augmentations = augmentations
        self.image_format = image_format
        self.metadata = metadata
        self.check_labels = check_labels

    @classmethod
    def from_config(cls, cfg: Any, is_train: bool = True) -> dict[str, Any]:
        names = cfg.DATASETS.TRAIN if is_train else cfg.DATASETS.TEST
        metadata = MetadataCatalog.get(names[0]) if len(names) else None
        for name in names if is_train else ():
            check_num_classes(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, name)
        ignore = metadata.get("ignore_label", 255) if metadata is not None else 255
        return {
            "is_train": is_train,
            "augmentations": build_augmentation(cfg, is_train, ignore_label=ignore),
            "image_format": cfg.INPUT.FORMAT,
            "metadata": metadata,
            "check_labels": cfg.DATALOADER.CHECK_LABELS,
        }

    def _read_labels(self, d: Mapping[str, Any], hw: tuple[int, int]) -> dict[str, tv_tensors.Mask]:
        if "sem_seg_file_name" not in d:
            raise KeyError(f"Dataset dict of {d.get('file_name')} has no 'sem_seg_file_name'")
        expected = hw if self.check_labels else None
        labels = read_sem_seg(d["sem_seg_file_name"], self.metadata, expected_hw=expected)
        return {"sem_seg": tv_tensors.Mask(torch.from_numpy(labels))}

    def __call__(self, dataset_dict: Mapping[str, Any]) -> dict[str, Any]:
        """Map one dataset dict (``file_name``, ``sem_seg_file_name``, ...) to a model input."""
        d = copy.deepcopy(dict(dataset_dict))
        image = read_image(d["file_name"], format=self.image_format)
        if self.check_labels:
            check_image_size(d, image)
        hw = (int(image.shape[0]), int(image.shape[1]))
        tensor = tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))
        labels = self._read_labels(d, hw) if self.is_train else {}
        tensor, labels = apply_transforms(self.augmentations, tensor, labels)
        d["image"] = tensor.as_subclass(torch.Tensor).contiguous()
        if self.is_train:
            d["sem_seg"] = labels["sem_seg"].as_subclass(torch.Tensor).long()
        d["height"], d["width"] = hw
        d.setdefault("image_id", os.path.splitext(os.path.basename(d["file_name"]))[0])
        return d

    def __repr__(self) -> str:
        mode = "train" if self.is_train else "test"
        return f"SemSegDatasetMapper({mode}, format={self.image_format}, {self.augmentations})"
