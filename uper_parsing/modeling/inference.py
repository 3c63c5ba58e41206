"""Whole-image, sliding-window and multi-scale + flip inference of any logits function.

The functions take ``logits_fn(images: Tensor (N, 3, h, w)) -> Tensor (N, K, h', w')`` logits at
any stride, so every meta-architecture can reuse them; they return scores at the input size.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..layers import pad_to_multiple, pad_to_size, resize_to

__all__ = [
    "InferenceSettings",
    "whole_inference",
    "slide_inference",
    "multi_scale_flip_inference",
    "run_inference",
]

LogitsFn = Callable[[torch.Tensor], torch.Tensor]

_MODES = ("whole", "slide")


@dataclass(frozen=True)
class InferenceSettings:
    """How to turn a logits function into full-size scores (the ``TEST`` config group)."""

    mode: str = "whole"  # "whole" or "slide"
    crop_size: tuple[int, int] = (512, 512)  # slide window (height, width)
    stride: tuple[int, int] = (341, 341)  # slide stride (height, width)
    tta: bool = False  # average softmax probabilities over scales (and flips)
    tta_scales: tuple[float, ...] = (1.0,)
    tta_flip: bool = False
    # False: no padding to a size divisibility, slide windows unpadded (mmseg's test); the caller
    # then passes one image at a time
    pad_to_divisibility: bool = True

    def __post_init__(self) -> None:
        if self.mode not in _MODES:
            raise ValueError(f"inference mode must be one of {_MODES}, got '{self.mode}'")
        if self.mode == "slide" and not all(
            0 < s <= c for s, c in zip(self.stride, self.crop_size)
        ):
            raise ValueError(f"slide stride {self.stride} must be in (0, crop {self.crop_size}]")

    @classmethod
    def from_config(cls, cfg) -> InferenceSettings:
        return cls(
            mode=cfg.TEST.MODE,
            crop_size=tuple(cfg.TEST.SLIDE_CROP_SIZE),
            stride=tuple(cfg.TEST.SLIDE_STRIDE),
            tta=cfg.TEST.AUG.ENABLED,
            tta_scales=tuple(cfg.TEST.AUG.SCALES),
            tta_flip=cfg.TEST.AUG.FLIP,
            pad_to_divisibility=cfg.TEST.PAD_TO_DIVISIBILITY,
        )


def whole_inference(
    logits_fn: LogitsFn, images: torch.Tensor, *, size_divisibility: int = 0
) -> torch.Tensor:
    """Run on the whole batch, padded (zeros) to ``size_divisibility``.

    images: Tensor (N, 3, H, W). Returns: Tensor (N, K, H, W) logits.
    """
    height, width = images.shape[-2:]
    padded = pad_to_multiple(images, size_divisibility)
    logits = resize_to(logits_fn(padded), padded.shape[-2:])
    return logits[..., :height, :width]


def _windows(size: int, crop: int, stride: int) -> list[tuple[int, int]]:
    """(start, end) of mmseg's windows along one axis: the last window ends at the border."""
    count = max(size - crop + stride - 1, 0) // stride + 1
    windows = []
    for i in range(count):
        end = min(i * stride + crop, size)
        windows.append((max(end - crop, 0), end))
    return windows


def slide_inference(
    logits_fn: LogitsFn,
    images: torch.Tensor,
    *,
    crop_size: Sequence[int],
    stride: Sequence[int],
    size_divisibility: int = 0,
    pad_windows: bool = True,
) -> torch.Tensor:
    """Sliding-window inference (mmseg ``slide_inference``): overlapping ``crop_size`` windows
    every ``stride`` pixels, the last one flush with the border; overlapping logits are averaged.

    A window larger than the image (the image is smaller than ``crop_size``) is padded with zeros
    to ``crop_size`` when ``pad_windows``; mmseg runs it unpadded (``pad_windows=False``).

    images: Tensor (N, 3, H, W). Returns: Tensor (N, K, H, W) logits.
    """
    height, width = images.shape[-2:]
    total, count = None, images.new_zeros((1, 1, height, width))
    for y1, y2 in _windows(height, crop_size[0], stride[0]):
        for x1, x2 in _windows(width, crop_size[1], stride[1]):
            window = images[..., y1:y2, x1:x2]
            window = pad_to_size(window, crop_size) if pad_windows else window
            logits = whole_inference(logits_fn, window, size_divisibility=size_divisibility)
            logits = logits[..., : y2 - y1, : x2 - x1]
            if total is None:
                total = logits.new_zeros((*logits.shape[:2], height, width))
            total[..., y1:y2, x1:x2] += logits
            count[..., y1:y2, x1:x2] += 1
    return total / count


def multi_scale_flip_inference(
    infer_fn: LogitsFn, images: torch.Tensor, *, scales: Sequence[float], flip: bool
) -> torch.Tensor:
    """Test-time augmentation: ``infer_fn`` (full-size logits, e.g. ``whole_inference``) on the
    images rescaled by each factor (and flipped horizontally when ``flip``); logits are resized
    back to the input size, softmaxed and the probabilities averaged.

    images: Tensor (N, 3, H, W). Returns: Tensor (N, K, H, W) probabilities.
    """
    height, width = images.shape[-2:]
    flips = (False, True) if flip else (False,)
    total = None
    for scale in scales:
        size = [max(1, int(side * scale + 0.5)) for side in (height, width)]  # mmcv rounding
        scaled = resize_to(images, size)
        for flipped in flips:
            logits = infer_fn(scaled.flip(-1) if flipped else scaled)
            logits = logits.flip(-1) if flipped else logits
            probs = resize_to(logits, (height, width)).softmax(dim=1)
            total = probs if total is None else total + probs
    return total / (len(scales) * len(flips))


def run_inference(
    logits_fn: LogitsFn,
    images: torch.Tensor,
    settings: InferenceSettings,
    *,
    size_divisibility: int = 0,
) -> torch.Tensor:
    """Scores at the input size as ``settings`` asks: whole or slide, optionally inside TTA;
    without ``settings.pad_to_divisibility`` nothing is padded (``size_divisibility`` unused).

    images: Tensor (N, 3, H, W). Returns: Tensor (N, K, H, W) logits, or probabilities with TTA.
    """
    if not settings.pad_to_divisibility:
        size_divisibility = 0
    if settings.mode == "slide":
        infer_fn = functools.partial(
            slide_inference,
            logits_fn,
            crop_size=settings.crop_size,
            stride=settings.stride,
            size_divisibility=size_divisibility,
            pad_windows=settings.pad_to_divisibility,
        )
    else:
        infer_fn = functools.partial(
            whole_inference, logits_fn, size_divisibility=size_divisibility
        )
    if not settings.tta:
        return infer_fn(images)
    return multi_scale_flip_inference(
        infer_fn, images, scales=settings.tta_scales, flip=settings.tta_flip
    )
