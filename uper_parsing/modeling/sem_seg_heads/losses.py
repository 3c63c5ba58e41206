"""The semantic-segmentation loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...layers import resize_to

__all__ = ["sem_seg_cross_entropy", "cross_entropy_divisor"]


def sem_seg_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    ignore_value: int,
    class_weights: torch.Tensor | None = None,
    avg_non_ignore: bool = True,
) -> torch.Tensor:
    """Pixel-wise cross-entropy: the (class-weighted) sum over labelled pixels divided by
    :func:`cross_entropy_divisor`.

    Args:
        logits: Tensor (N, K, h, w) at any stride; resized to the target size with ``resize_to``.
        targets: Tensor (N, H, W) long class indices, ``ignore_value`` where there is no label.
        ignore_value: label value that produces no loss.
        class_weights: Tensor (K,) or None; with ``avg_non_ignore`` equals
            ``F.cross_entropy(..., weight=class_weights)``.
        avg_non_ignore: divide by the labelled pixels (torch's mean) or, False, by all pixels
            (mmseg's ``CrossEntropyLoss(avg_non_ignore=False)``, its default).

    Returns: scalar Tensor; 0 (with a gradient path) when every pixel is ignored, where
        ``F.cross_entropy`` would return NaN.
    """
    # the loss reads full-size logits in (N, K, H, W) order: make the small ones so before they
    # are resized. A channels-last model's logits would otherwise be resized channels-last and
    # copied back (and their gradient too) at full size, costing 20% of a UPerNet step on a GPU.
    logits = resize_to(logits.contiguous(), targets.shape[-2:])
    total = F.cross_entropy(
        logits, targets, weight=class_weights, ignore_index=ignore_value, reduction="sum"
    )
    count = cross_entropy_divisor(
        targets,
        ignore_value=ignore_value,
        class_weights=class_weights,
        avg_non_ignore=avg_non_ignore,
    )
    # at least float32: a float16 divisor overflows at 65504 pixels
    dtype = torch.promote_types(total.dtype, torch.float32)
    return total / count.to(dtype).clamp(min=torch.finfo(dtype).tiny)


def cross_entropy_divisor(
    targets: torch.Tensor,
    *,
    ignore_value: int,
    class_weights: torch.Tensor | None = None,
    avg_non_ignore: bool = True,
) -> torch.Tensor:
    """What mmseg 1.x's ``cross_entropy`` divides the summed loss by (its ``avg_factor``).

    Without class weights: the labelled pixels (``avg_non_ignore``) or all pixels. With class
    weights: the sum of the labels' class weights over the labelled pixels (``avg_non_ignore``),
    or over all pixels, where an ignored pixel's label has no weight: there we raise a ValueError.
    (mmseg 1.2.2 looks the weight up for every pixel before zeroing the ignored ones, so with any
    ignored pixel it raises an IndexError in both modes, issue #3734.)

    targets: Tensor (N, H, W) long. Returns: scalar Tensor.
    """
    valid = targets != ignore_value
    if class_weights is None:
        if avg_non_ignore:
            return valid.sum()
        return torch.tensor(targets.numel(), device=targets.device)
    if not avg_non_ignore and not bool(valid.all()):
        raise ValueError(
            "MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS with LOSS_AVG_NON_IGNORE False: mmseg then divides "
            f"by the class weights of every pixel's label, and ignored pixels ({ignore_value}) "
            "have none (mmseg 1.x raises IndexError, issue #3734); set LOSS_AVG_NON_IGNORE True"
        )
    return (class_weights[torch.where(valid, targets, 0)] * valid).sum()
