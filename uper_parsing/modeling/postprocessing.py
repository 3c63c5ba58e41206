"""Bring model outputs back to the size the caller asked for."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..layers import resize_to

__all__ = ["sem_seg_postprocess"]


def sem_seg_postprocess(
    result: torch.Tensor, img_size: Sequence[int], output_height: int, output_width: int
) -> torch.Tensor:
    """Crop the padding off and resize to the requested size.

    Args:
        result: Tensor (K, Hp, Wp) scores of a padded batch entry.
        img_size: (h, w) of the image inside the padded batch.
        output_height, output_width: the size to return (the original image size).

    Returns: Tensor (K, output_height, output_width).
    """
    cropped = result[:, : img_size[0], : img_size[1]]
    return resize_to(cropped[None], (output_height, output_width))[0]
