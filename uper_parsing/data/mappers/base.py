"""``LabelMapsMapper``: what every dense-label mapper shares (read, one joint transform, output)."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from ...config import configurable
from ..catalog import MetadataCatalog
from ..readers import check_image_size, read_image
from ..transforms import apply_transforms, build_augmentation

__all__ = ["LabelMapsMapper"]


class LabelMapsMapper:
    """Read an image and, when training, its label maps (``read_labels``, defined by subclasses),
    move them together with one joint transform, and return the model input.

    Output dict (a deep copy of the input plus):
        ``image``: Tensor (3, H, W) uint8 in ``image_format``, after augmentation.
        one Tensor (H, W) per label map ``read_labels`` returned (training only), in the
            narrowest dtype that holds it (``label_dtype``: uint8 for an ignore label up to 255),
            so that workers, pinning and the copy to the GPU move 1 byte a pixel, not 8; the
            model widens it on the device.
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
            is_train: read and transform label maps (True) or only the image (False).
            augmentations: joint transform (or list of them) over image + label maps.
            image_format: "RGB" or "BGR" channel order of ``image``.
            metadata: the dataset's ``Metadata`` (label mapping, classes, ignore label); needed
                when ``is_train``.
            check_labels: check that images and labels have the size the dataset dict says.
        """
        if is_train and metadata is None:
            raise ValueError(f"A training {type(self).__name__} needs the dataset's metadata")
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
        ignore = metadata.get("ignore_label", 255) if metadata is not None else 255
        return {
            "is_train": is_train,
            "augmentations": build_augmentation(cfg, is_train, ignore_label=ignore),
            "image_format": cfg.INPUT.FORMAT,
            "metadata": metadata,
            "check_labels": cfg.DATALOADER.CHECK_LABELS,
        }

    def read_labels(self, d: Mapping[str, Any], hw: tuple[int, int]) -> dict[str, np.ndarray]:
        """The (H, W) train-id maps of one dataset dict whose image is ``hw``."""
        raise NotImplementedError

    def label_dtype(self, name: str) -> torch.dtype:
        """dtype of the output label map ``name``: uint8 when the dataset's ignore label (and so
        every class id) fits in a byte, else int32."""
        ignore = self.metadata.get("ignore_label", 255) if self.metadata is not None else 255
        return torch.uint8 if ignore <= 255 else torch.int32

    def _narrow(self, name: str, labels: torch.Tensor, file_name: str) -> torch.Tensor:
        dtype = self.label_dtype(name)
        if dtype == torch.uint8 and labels.dtype != torch.uint8 and labels.numel():
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high > 255:
                raise ValueError(
                    f"{file_name}: label map '{name}' holds values {low}..{high}, outside the "
                    "0..255 of a dataset whose ignore_label is at most 255"
                )
        return labels.to(dtype)

    def __call__(self, dataset_dict: Mapping[str, Any]) -> dict[str, Any]:
        """Map one dataset dict (``file_name`` and its label files) to a model input.

        A dict may carry its image instead of ``file_name``: ``image``, an (H, W, 3) uint8
        ndarray in ``image_format`` order (the predictor's images, read or decoded by it).
        """
        source = dict(dataset_dict)
        image = source.pop("image", None)
        d = copy.deepcopy(source)
        if image is None:
            image = read_image(d["file_name"], format=self.image_format)
        elif not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3):
            raise ValueError(f"'image' must be an (H, W, 3) ndarray, got {_describe(image)}")
        elif image.dtype != np.uint8:
            raise ValueError(f"'image' must be uint8 (0-255), got {image.dtype}")
        if self.check_labels:
            check_image_size(d, image)
        hw = (int(image.shape[0]), int(image.shape[1]))
        tensor = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
        labels = {}
        if self.is_train:
            labels = {
                k: tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(v)))
                for k, v in self.read_labels(d, hw).items()
            }
        tensor, labels = apply_transforms(self.augmentations, tensor, labels)
        d["image"] = tensor.as_subclass(torch.Tensor).contiguous()
        for name, mask in labels.items():
            d[name] = self._narrow(name, mask.as_subclass(torch.Tensor), d["file_name"])
        d["height"], d["width"] = hw
        if "file_name" in d:
            d.setdefault("image_id", os.path.splitext(os.path.basename(d["file_name"]))[0])
        return d

    def __repr__(self) -> str:
        mode = "train" if self.is_train else "test"
        return f"{type(self).__name__}({mode}, format={self.image_format}, {self.augmentations})"


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return f"{type(value).__name__} of shape {tuple(shape)}" if shape is not None else repr(value)
