"""The semantic-segmentation loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...layers import resize_to

__all__ = ["sem_seg_cross_entropy"]


def sem_seg_cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    ignore_value: int,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Pixel-wise cross-entropy, averaged over the (weighted) pixels that are not ignored.

    Args:
        logits: Tensor (N, K, h, w) at any stride; resized to the target size with ``resize_to``.
        targets: Tensor (N, H, W) long class indices, ``ignore_value`` where there is no label.
        ignore_value: label value that produces no loss.
        class_weights: Tensor (K,) or None; equals ``F.cross_entropy(..., weight=class_weights)``.

    Returns: scalar Tensor; 0 (with a gradient path) when every pixel is ignored, where
        ``F.cross_entropy`` would return NaN.
    """
    logits = resize_to(logits, targets.shape[-2:])
    total = F.cross_entropy(
        logits, targets, weight=class_weights, ignore_index=ignore_value, reduction="sum"
    )
    valid = targets != ignore_value
    if class_weights is None:
        count = valid.sum()
    else:
        count = (class_weights[torch.where(valid, targets, 0)] * valid).sum()
    return total / count.clamp(min=torch.finfo(total.dtype).tiny)
