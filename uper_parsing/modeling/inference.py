"""Whole-image, sliding-window and multi-scale + flip inference of any logits function.

The functions take ``logits_fn(images: Tensor (N, 3, h, w))`` returning either one Tensor
(N, K, h', w') of logits at any stride or a dict of such outputs, so every meta-architecture can
reuse them. In a dict, a 4-D entry is a dense map (N, K, h', w'); a 2-D entry (N, K) holds
image-level logits (a scene or texture class), which are never cropped, resized or flipped.

How evaluations are combined (windows of ``slide``, scales and flips of TTA):

- dense maps are stitched as logits (overlaps averaged), resized to the input size and, with TTA,
  averaged as softmax probabilities (mmseg's), or as logits with ``average_logits``;
- image-level logits are averaged as class scores (softmax probabilities) and returned as their
  log, so they stay logits: their softmax is the averaged probabilities. A single evaluation
  (whole image, no TTA) returns the logits as they are.
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

Outputs = torch.Tensor | dict[str, torch.Tensor]
LogitsFn = Callable[[torch.Tensor], Outputs]

_MODES = ("whole", "slide")
_SINGLE = ""  # key of a logits function's single tensor inside the dict-based helpers


@dataclass(frozen=True)
class InferenceSettings:
    """How to turn a logits function into full-size scores (the ``TEST`` config group)."""

    mode: str = "whole"  # "whole" or "slide"
    crop_size: tuple[int, int] = (512, 512)  # slide window (height, width)
    stride: tuple[int, int] = (341, 341)  # slide stride (height, width)
    tta: bool = False  # average over scales (and flips)
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


def _as_dict(outputs: Outputs) -> dict[str, torch.Tensor]:
    return {_SINGLE: outputs} if isinstance(outputs, torch.Tensor) else dict(outputs)


def _like(entries: dict[str, torch.Tensor], outputs: Outputs) -> Outputs:
    """``entries`` in the form of ``outputs``: a Tensor for a Tensor, else the dict."""
    return entries[_SINGLE] if isinstance(outputs, torch.Tensor) else entries


def _is_map(x: torch.Tensor) -> bool:
    """A dense map (N, K, h, w), as opposed to image-level logits (N, K)."""
    if x.dim() not in (2, 4):
        raise ValueError(f"outputs must be (N, K, h, w) maps or (N, K) logits, got {x.shape}")
    return x.dim() == 4


def _log_of_mean(total_probs: torch.Tensor, count: int) -> torch.Tensor:
    """Averaged probabilities returned as logits (their log, kept finite)."""
    return (total_probs / count).clamp_min(torch.finfo(total_probs.dtype).tiny).log()


def whole_inference(
    logits_fn: LogitsFn, images: torch.Tensor, *, size_divisibility: int = 0
) -> Outputs:
    """Run on the whole batch, padded (zeros) to ``size_divisibility``.

    images: Tensor (N, 3, H, W). Returns: Tensor (N, K, H, W) logits, or a dict of such maps and
    of (N, K) image-level logits.
    """
    height, width = images.shape[-2:]
    padded = pad_to_multiple(images, size_divisibility)
    outputs = logits_fn(padded)
    entries = {
        key: resize_to(x, padded.shape[-2:])[..., :height, :width] if _is_map(x) else x
        for key, x in _as_dict(outputs).items()
    }
    return _like(entries, outputs)


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
) -> Outputs:
    """Sliding-window inference (mmseg ``slide_inference``): overlapping ``crop_size`` windows
    every ``stride`` pixels, the last one flush with the border; overlapping logits are averaged.
    Image-level logits are averaged over the windows as softmax probabilities (returned as log).

    A window larger than the image (the image is smaller than ``crop_size``) is padded with zeros
    to ``crop_size`` when ``pad_windows``; mmseg runs it unpadded (``pad_windows=False``).

    images: Tensor (N, 3, H, W). Returns: Tensor (N, K, H, W) logits, or a dict of such maps and
    of (N, K) image-level logits.
    """
    height, width = images.shape[-2:]
    totals: dict[str, torch.Tensor] = {}
    count, num_windows = images.new_zeros((1, 1, height, width)), 0
    for y1, y2 in _windows(height, crop_size[0], stride[0]):
        for x1, x2 in _windows(width, crop_size[1], stride[1]):
            window = images[..., y1:y2, x1:x2]
            window = pad_to_size(window, crop_size) if pad_windows else window
            outputs = whole_inference(logits_fn, window, size_divisibility=size_divisibility)
            for key, x in _as_dict(outputs).items():
                if _is_map(x):
                    total = totals.setdefault(key, x.new_zeros((*x.shape[:2], height, width)))
                    total[..., y1:y2, x1:x2] += x[..., : y2 - y1, : x2 - x1]
                else:
                    totals[key] = totals.get(key, 0) + x.softmax(dim=1)
            count[..., y1:y2, x1:x2] += 1
            num_windows += 1
    entries = {
        key: total / count if _is_map(total) else _log_of_mean(total, num_windows)
        for key, total in totals.items()
    }
    return _like(entries, outputs)


def multi_scale_flip_inference(
    infer_fn: LogitsFn,
    images: torch.Tensor,
    *,
    scales: Sequence[float],
    flip: bool,
    average_logits: bool = False,
) -> Outputs:
    """Test-time augmentation: ``infer_fn`` (full-size outputs, e.g. ``whole_inference``) on the
    images rescaled by each factor (and flipped horizontally when ``flip``). Dense maps are
    flipped back, resized to the input size and averaged as softmax probabilities (as logits
    with ``average_logits``); image-level logits are averaged as softmax probabilities and
    returned as their log.

    images: Tensor (N, 3, H, W). Returns: Tensor (N, K, H, W) probabilities (logits with
    ``average_logits``), or a dict of such maps and of (N, K) image-level logits.
    """
    height, width = images.shape[-2:]
    flips = (False, True) if flip else (False,)
    totals: dict[str, torch.Tensor] = {}
    for scale in scales:
        size = [max(1, int(side * scale + 0.5)) for side in (height, width)]  # mmcv rounding
        scaled = resize_to(images, size)
        for flipped in flips:
            outputs = infer_fn(scaled.flip(-1) if flipped else scaled)
            for key, x in _as_dict(outputs).items():
                if _is_map(x):
                    x = resize_to(x.flip(-1) if flipped else x, (height, width))
                scores = x if _is_map(x) and average_logits else x.softmax(dim=1)
                totals[key] = totals[key] + scores if key in totals else scores
    num = len(scales) * len(flips)
    entries = {
        key: total / num if _is_map(total) else _log_of_mean(total, num)
        for key, total in totals.items()
    }
    return _like(entries, outputs)


def run_inference(
    logits_fn: LogitsFn,
    images: torch.Tensor,
    settings: InferenceSettings,
    *,
    size_divisibility: int = 0,
    average_logits: bool = False,
) -> Outputs:
    """Scores at the input size as ``settings`` asks: whole or slide, optionally inside TTA;
    without ``settings.pad_to_divisibility`` nothing is padded (``size_divisibility`` unused).

    images: Tensor (N, 3, H, W). Returns: Tensor (N, K, H, W) logits, or probabilities with TTA
    (logits with ``average_logits``); for a dict-valued ``logits_fn``, a dict of such maps and of
    (N, K) image-level logits (see the module docstring).
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
        infer_fn,
        images,
        scales=settings.tta_scales,
        flip=settings.tta_flip,
        average_logits=average_logits,
    )
