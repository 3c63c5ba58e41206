"""Joint geometric and photometric augmentation on ``tv_tensors.Image`` + ``tv_tensors.Mask``.

Transforms are ``torchvision.transforms.v2`` transforms: call them as ``t(image, labels)`` with a
``tv_tensors.Image`` (3, H, W) uint8 and a dict of ``tv_tensors.Mask`` (H, W) label maps; every
label map moves with the image (masks are resized with nearest neighbour, padded with the ignore
label), so multi-task maps never drift apart. Images are resized with one of
``IMAGE_INTERPOLATIONS`` (``INPUT.INTERPOLATION``), which also picks the nearest neighbour of the
label maps (torchvision's, or OpenCV's for "cv2_bilinear"). Randomness comes from torch's
generator, which the data loader seeds per worker.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF
from torchvision.transforms.v2._utils import query_size

__all__ = [
    "IMAGE_INTERPOLATIONS",
    "ResizeRatioRange",
    "ResizeShortestEdge",
    "RandomCropCategoryArea",
    "PhotometricDistortion",
    "PadTo",
    "apply_transforms",
    "build_augmentation",
]


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(1).uniform_(low, high))


def _randint(low: int, high: int) -> int:
    """Integer in [low, high] (both included)."""
    return int(torch.randint(low, high + 1, (1,)))


def _resize_antialiased(inpt: Any, size: tuple[int, int]) -> Any:
    """torchvision's antialiased bilinear; nearest for masks (torchvision's choice for ``Mask``).
    A uint8 image resized to 1 x 1 goes through float32: torch's uint8 antialiasing kernel fails
    an internal assert on that size."""
    bilinear = v2.InterpolationMode.BILINEAR
    if tuple(size) == (1, 1) and isinstance(inpt, tv_tensors.Image) and inpt.dtype == torch.uint8:
        out = TF.resize(inpt.as_subclass(torch.Tensor).float(), [1, 1], bilinear, antialias=True)
        return tv_tensors.wrap(out.round().clamp(0, 255).to(torch.uint8), like=inpt)
    return TF.resize(inpt, list(size), interpolation=bilinear, antialias=True)


def _resize_pil_bilinear(inpt: Any, size: tuple[int, int]) -> Any:
    """PIL's bilinear on a uint8 ``Image`` (detectron2's ``ResizeTransform``), one channel at a
    time (equal to PIL's RGB resize); anything else as ``_resize_antialiased`` (masks: nearest)."""
    if not isinstance(inpt, tv_tensors.Image):
        return _resize_antialiased(inpt, size)
    if inpt.dtype != torch.uint8:
        raise ValueError(f"interpolation 'pil_bilinear' resizes uint8 images, got {inpt.dtype}")
    planes = inpt.reshape(-1, *inpt.shape[-2:]).numpy()
    height, width = size
    resized = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(plane)).resize((width, height), Image.BILINEAR)
        )
        for plane in planes
    ]
    out = torch.from_numpy(np.stack(resized)).reshape(*inpt.shape[:-2], height, width)
    return tv_tensors.wrap(out, like=inpt)


def _resize_cv2(inpt: Any, size: tuple[int, int]) -> Any:
    """mmcv's ``imresize`` (its default cv2 backend): ``cv2.resize`` with INTER_LINEAR on a uint8
    ``Image`` (channels last, as mmcv holds images), INTER_NEAREST on a ``Mask`` (mmcv's label
    maps); anything else as ``_resize_antialiased``."""
    if isinstance(inpt, tv_tensors.Mask):
        return _cv2_resize_planes(inpt, size, cv2.INTER_NEAREST, np.int32)
    if not isinstance(inpt, tv_tensors.Image):
        return _resize_antialiased(inpt, size)
    if inpt.dtype != torch.uint8:
        raise ValueError(f"interpolation 'cv2_bilinear' resizes uint8 images, got {inpt.dtype}")
    return _cv2_resize_planes(inpt, size, cv2.INTER_LINEAR, np.uint8)


def _cv2_resize_planes(inpt: torch.Tensor, size: tuple[int, int], mode: int, dtype: type) -> Any:
    """``cv2.resize`` of inpt (..., H, W) as one (H, W, planes) array of ``dtype`` (OpenCV has no
    int64). Returns the same tensor type (..., *size) in inpt's dtype."""
    height, width = size
    planes = inpt.reshape(-1, *inpt.shape[-2:]).permute(1, 2, 0).numpy().astype(dtype)
    resized = cv2.resize(np.ascontiguousarray(planes), (width, height), interpolation=mode)
    resized = resized.reshape(height, width, -1).transpose(2, 0, 1)
    out = torch.from_numpy(np.ascontiguousarray(resized)).to(inpt.dtype)
    return tv_tensors.wrap(out.reshape(*inpt.shape[:-2], height, width), like=inpt)


# How images are resized, by INPUT.INTERPOLATION; label maps are resized with nearest neighbour.
IMAGE_INTERPOLATIONS = {
    "bilinear": _resize_antialiased,
    "pil_bilinear": _resize_pil_bilinear,
    "cv2_bilinear": _resize_cv2,
}


def _image_resize(interpolation: str) -> Any:
    """The image resize function of ``interpolation``, a key of ``IMAGE_INTERPOLATIONS``."""
    if interpolation not in IMAGE_INTERPOLATIONS:
        raise ValueError(
            f"interpolation must be one of {list(IMAGE_INTERPOLATIONS)}, got {interpolation!r}"
        )
    return IMAGE_INTERPOLATIONS[interpolation]


def apply_transforms(
    transform: v2.Transform | None,
    image: tv_tensors.Image,
    labels: dict[str, tv_tensors.Mask] | None = None,
) -> tuple[tv_tensors.Image, dict[str, tv_tensors.Mask]]:
    """Run ``transform`` on an image and its label maps together. Returns (image, labels)."""
    labels = labels or {}
    if transform is None:
        return image, labels
    out_image, out_labels = transform(image, labels)
    return out_image, out_labels


class ResizeRatioRange(v2.Transform):
    """mmseg's ``Resize(img_scale, ratio_range, keep_ratio=True)``.

    A ratio ``r`` is drawn from ``ratio_range``; the image is scaled, keeping its aspect ratio, to
    the largest size whose long side is at most ``scale[0] * r`` and short side at most
    ``scale[1] * r``. Images are resized with ``interpolation`` (a key of
    ``IMAGE_INTERPOLATIONS``), label maps with nearest.
    """

    def __init__(
        self,
        *,
        scale: Sequence[int],
        ratio_range: Sequence[float],
        interpolation: str = "bilinear",
    ) -> None:
        super().__init__()
        self.scale = (int(scale[0]), int(scale[1]))
        self.ratio_range = (float(ratio_range[0]), float(ratio_range[1]))
        self.interpolation = interpolation
        self._resize = _image_resize(interpolation)

    @staticmethod
    def output_size(hw: tuple[int, int], long_side: float, short_side: float) -> tuple[int, int]:
        """(H', W'), rounded, at least 1 px a side (a thin image keeps its one row)."""
        h, w = hw
        factor = min(long_side / max(h, w), short_side / min(h, w))
        return max(int(h * factor + 0.5), 1), max(int(w * factor + 0.5), 1)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        ratio = _uniform(*self.ratio_range)
        size = self.output_size(
            query_size(flat_inputs), self.scale[0] * ratio, self.scale[1] * ratio
        )
        return {"size": size}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._resize(inpt, params["size"])


class ResizeShortestEdge(v2.Transform):
    """detectron2's ``ResizeShortestEdge``: the short side becomes one of ``short_edge_length``
    ("choice") or a value drawn from its [min, max] ("range"), the long side capped at ``max_size``
    (0 = no cap). Images are resized with ``interpolation`` (a key of ``IMAGE_INTERPOLATIONS``;
    detectron2's is "pil_bilinear"), label maps with nearest."""

    def __init__(
        self,
        *,
        short_edge_length: int | Sequence[int],
        max_size: int = 0,
        sample_style: str = "choice",
        interpolation: str = "bilinear",
    ) -> None:
        super().__init__()
        self.interpolation = interpolation
        self._resize = _image_resize(interpolation)
        if isinstance(short_edge_length, int):
            short_edge_length = (short_edge_length,)
        if sample_style not in ("choice", "range"):
            raise ValueError(f"sample_style must be 'choice' or 'range', got {sample_style!r}")
        if sample_style == "range" and len(short_edge_length) != 2:
            raise ValueError("sample_style='range' needs (min, max) short_edge_length")
        self.short_edge_length = tuple(int(s) for s in short_edge_length)
        self.max_size = int(max_size)
        self.sample_style = sample_style

    @staticmethod
    def output_size(hw: tuple[int, int], short: int, max_size: int) -> tuple[int, int]:
        """(H', W'), rounded, at least 1 px a side (a thin image keeps its one row)."""
        h, w = hw
        scale = short / min(h, w)
        new_h, new_w = h * scale, w * scale
        if max_size > 0 and max(new_h, new_w) > max_size:
            scale = max_size / max(new_h, new_w)
            new_h, new_w = new_h * scale, new_w * scale
        return max(int(new_h + 0.5), 1), max(int(new_w + 0.5), 1)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        if self.sample_style == "range":
            short = _randint(self.short_edge_length[0], self.short_edge_length[1])
        else:
            short = self.short_edge_length[_randint(0, len(self.short_edge_length) - 1)]
        return {"size": self.output_size(query_size(flat_inputs), short, self.max_size)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._resize(inpt, params["size"])


def _find_mask(inputs: Any, key: str) -> torch.Tensor | None:
    """The ``Mask`` stored under ``key`` in any dict of the (nested) inputs, or None."""
    if isinstance(inputs, dict):
        if isinstance(inputs.get(key), tv_tensors.Mask):
            return inputs[key]
        inputs = list(inputs.values())
    if isinstance(inputs, (list, tuple)):
        for item in inputs:
            found = _find_mask(item, key)
            if found is not None:
                return found
    return None


class RandomCropCategoryArea(v2.Transform):
    """mmseg's ``RandomCrop(crop_size, cat_max_ratio)``.

    A crop of ``size`` (smaller where the image is smaller) is drawn uniformly. While one category
    covers more than ``single_category_max_area`` of the crop's labelled pixels (ignore excluded)
    of the ``primary`` label map, or the crop holds a single category, the crop is re-drawn, up to
    ``max_tries`` times; when no try passes, the crop with the smallest largest-category share is
    kept (mmseg keeps the last one).
    """

    def __init__(
        self,
        *,
        size: Sequence[int],
        single_category_max_area: float = 1.0,
        ignore_label: int = 255,
        primary: str = "sem_seg",
        max_tries: int = 10,
    ) -> None:
        super().__init__()
        self.size = (int(size[0]), int(size[1]))
        self.single_category_max_area = float(single_category_max_area)
        self.ignore_label = int(ignore_label)
        self.primary = primary
        self.max_tries = int(max_tries)
        self._primary_mask: torch.Tensor | None = None

    def forward(self, *inputs: Any) -> Any:
        # make_params only sees flat inputs; remember which label map is the primary one.
        self._primary_mask = _find_mask(inputs, self.primary)
        try:
            return super().forward(*inputs)
        finally:
            self._primary_mask = None

    def _draw(self, hw: tuple[int, int]) -> tuple[int, int, int, int]:
        ch, cw = min(self.size[0], hw[0]), min(self.size[1], hw[1])
        return _randint(0, hw[0] - ch), _randint(0, hw[1] - cw), ch, cw

    def _largest_share(self, crop: tuple[int, int, int, int]) -> float:
        """Share of the most frequent category among labelled pixels (1.0 if < 2 categories)."""
        top, left, h, w = crop
        labels = self._primary_mask[..., top : top + h, left : left + w].reshape(-1)
        counts = torch.bincount(labels.long(), minlength=self.ignore_label + 1)
        if self.ignore_label >= 0:
            counts[self.ignore_label] = 0
        if int((counts > 0).sum()) < 2:
            return 1.0
        return float(counts.max()) / float(counts.sum())

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        hw = query_size(flat_inputs)
        crop = self._draw(hw)
        if self.single_category_max_area < 1.0 and self._primary_mask is not None:
            best, best_share = crop, self._largest_share(crop)
            for _ in range(self.max_tries - 1):
                if best_share < self.single_category_max_area:
                    break
                crop = self._draw(hw)
                share = self._largest_share(crop)
                if share < best_share:
                    best, best_share = crop, share
            crop = best
        top, left, h, w = crop
        return {"top": top, "left": left, "height": h, "width": w}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return TF.crop(inpt, **params)


class PhotometricDistortion(v2.Transform):
    """mmseg's ``PhotoMetricDistortion`` (SSD): each step applied with probability 0.5.

    Brightness (+ delta), contrast (x alpha, before or after the colour steps), saturation (x alpha
    in HSV) and hue (+ delta in OpenCV's 0..180 hue). Images only; label maps pass through.
    """

    _transformed_types = (tv_tensors.Image,)

    def __init__(
        self,
        *,
        brightness_delta: int = 32,
        contrast_range: Sequence[float] = (0.5, 1.5),
        saturation_range: Sequence[float] = (0.5, 1.5),
        hue_delta: int = 18,
        image_format: str = "RGB",
    ) -> None:
        super().__init__()
        self.brightness_delta = brightness_delta
        self.contrast_range = tuple(contrast_range)
        self.saturation_range = tuple(saturation_range)
        self.hue_delta = hue_delta
        self.image_format = image_format
        self._to_hsv, self._from_hsv = {
            "RGB": (cv2.COLOR_RGB2HSV, cv2.COLOR_HSV2RGB),
            "BGR": (cv2.COLOR_BGR2HSV, cv2.COLOR_HSV2BGR),
        }[image_format]

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        def maybe(value: float) -> float | None:
            return value if _uniform(0, 1) < 0.5 else None

        b = self.brightness_delta
        return {
            "brightness": maybe(_uniform(-b, b)),
            "contrast_first": _uniform(0, 1) < 0.5,
            "contrast": maybe(_uniform(*self.contrast_range)),
            "saturation": maybe(_uniform(*self.saturation_range)),
            "hue": maybe(_randint(-self.hue_delta, self.hue_delta)),
        }

    @staticmethod
    def _convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
        return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        img = inpt.permute(1, 2, 0).numpy()
        if params["brightness"] is not None:
            img = self._convert(img, beta=params["brightness"])
        if params["contrast_first"] and params["contrast"] is not None:
            img = self._convert(img, alpha=params["contrast"])
        if params["saturation"] is not None or params["hue"] is not None:
            hsv = cv2.cvtColor(np.ascontiguousarray(img), self._to_hsv)
            if params["saturation"] is not None:
                hsv[..., 1] = self._convert(hsv[..., 1], alpha=params["saturation"])
            if params["hue"] is not None:
                hsv[..., 0] = (hsv[..., 0].astype(np.int32) + params["hue"]) % 180
            img = cv2.cvtColor(hsv, self._from_hsv)
        if not params["contrast_first"] and params["contrast"] is not None:
            img = self._convert(img, alpha=params["contrast"])
        out = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).contiguous()
        return tv_tensors.wrap(out, like=inpt)


class PadTo(v2.Transform):
    """Pad at the bottom and right to at least ``size`` (H, W) and/or to a multiple of
    ``size_divisibility``; images with ``image_fill``, label maps with ``label_fill``."""

    def __init__(
        self,
        *,
        size: Sequence[int] | None = None,
        size_divisibility: int = 0,
        image_fill: float = 0,
        label_fill: int = 255,
    ) -> None:
        super().__init__()
        self.size = (int(size[0]), int(size[1])) if size is not None else None
        self.size_divisibility = int(size_divisibility)
        self.fill = {tv_tensors.Image: image_fill, tv_tensors.Mask: label_fill}

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = query_size(flat_inputs)
        th, tw = h, w
        if self.size is not None:
            th, tw = max(th, self.size[0]), max(tw, self.size[1])
        if self.size_divisibility > 1:
            d = self.size_divisibility
            th, tw = math.ceil(th / d) * d, math.ceil(tw / d) * d
        return {"padding": [0, 0, tw - w, th - h]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not any(params["padding"]):
            return inpt
        fill = self.fill[tv_tensors.Mask if isinstance(inpt, tv_tensors.Mask) else tv_tensors.Image]
        return TF.pad(inpt, padding=params["padding"], fill=fill)


_TRAIN_RESIZES = {
    "ratio_range": lambda cfg: ResizeRatioRange(
        scale=cfg.INPUT.RESIZE_SCALE,
        ratio_range=cfg.INPUT.RATIO_RANGE,
        interpolation=cfg.INPUT.INTERPOLATION,
    ),
    "choice": lambda cfg: ResizeShortestEdge(
        short_edge_length=cfg.INPUT.MIN_SIZE_TRAIN,
        max_size=cfg.INPUT.MAX_SIZE_TRAIN,
        interpolation=cfg.INPUT.INTERPOLATION,
    ),
    "none": lambda cfg: None,
}
_FLIPS = {
    "horizontal": lambda: v2.RandomHorizontalFlip(0.5),
    "vertical": lambda: v2.RandomVerticalFlip(0.5),
    "none": lambda: None,
}


def _pick(table: dict, key: str, cfg_key: str) -> Any:
    if key not in table:
        raise ValueError(f"{cfg_key} = {key!r} is not one of {list(table)}")
    return table[key]


def build_augmentation(cfg: Any, is_train: bool, *, ignore_label: int = 255) -> v2.Compose | None:
    """The mmseg-style pipeline the ``INPUT`` keys describe.

    Train: resize (``RESIZE_TYPE``) -> random crop with category-area limit -> flip -> photometric
    distortion -> pad (``SIZE_DIVISIBILITY``; -1 pads to the crop size). Test: short-side resize
    to ``MIN_SIZE_TEST`` capped at ``MAX_SIZE_TEST`` (``MIN_SIZE_TEST = 0`` keeps the size: None).
    Both resize images with ``INTERPOLATION``.
    """
    inp = cfg.INPUT
    _pick(IMAGE_INTERPOLATIONS, inp.INTERPOLATION, "INPUT.INTERPOLATION")
    if not is_train:
        if inp.MIN_SIZE_TEST <= 0:
            return None
        resize = ResizeShortestEdge(
            short_edge_length=inp.MIN_SIZE_TEST,
            max_size=inp.MAX_SIZE_TEST,
            interpolation=inp.INTERPOLATION,
        )
        return v2.Compose([resize])
    steps = [_pick(_TRAIN_RESIZES, inp.RESIZE_TYPE, "INPUT.RESIZE_TYPE")(cfg)]
    if inp.CROP.ENABLED:
        steps.append(
            RandomCropCategoryArea(
                size=inp.CROP.SIZE,
                single_category_max_area=inp.CROP.SINGLE_CATEGORY_MAX_AREA,
                ignore_label=ignore_label,
            )
        )
    steps.append(_pick(_FLIPS, inp.RANDOM_FLIP, "INPUT.RANDOM_FLIP")())
    if inp.COLOR_AUG_SSD:
        steps.append(PhotometricDistortion(image_format=inp.FORMAT))
    if inp.SIZE_DIVISIBILITY == -1 and inp.CROP.ENABLED:
        steps.append(PadTo(size=inp.CROP.SIZE, label_fill=ignore_label))
    elif inp.SIZE_DIVISIBILITY > 1:
        steps.append(PadTo(size_divisibility=inp.SIZE_DIVISIBILITY, label_fill=ignore_label))
    steps = [t for t in steps if t is not None]
    return v2.Compose(steps) if steps else None
