"""The padding helpers every model uses."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["pad_to_size", "pad_to_multiple", "stack_padded"]


def _padded_size(height: int, width: int, size_divisibility: int) -> tuple[int, int]:
    if size_divisibility <= 1:
        return height, width
    d = size_divisibility
    return -(-height // d) * d, -(-width // d) * d


def pad_to_size(x: torch.Tensor, size: Sequence[int], value: float = 0.0) -> torch.Tensor:
    """Pad x: Tensor (..., h, w) at the bottom and right with ``value`` to (..., *size).

    Returns x itself when it already has that size; ``size`` must not be smaller than (h, w).
    """
    height, width = x.shape[-2:]
    if (height, width) == tuple(size):
        return x
    if size[0] < height or size[1] < width:
        raise ValueError(f"cannot pad a {height}x{width} map to the smaller size {tuple(size)}")
    return F.pad(x, (0, size[1] - width, 0, size[0] - height), value=value)


def pad_to_multiple(x: torch.Tensor, size_divisibility: int, value: float = 0.0) -> torch.Tensor:
    """Pad x: Tensor (..., H, W) at the bottom and right up to multiples of ``size_divisibility``.

    Returns: Tensor (..., H', W') with H', W' the next multiples (x itself when nothing to pad).
    """
    return pad_to_size(x, _padded_size(*x.shape[-2:], size_divisibility), value)


def stack_padded(
    tensors: Sequence[torch.Tensor], size_divisibility: int = 0, value: float = 0.0
) -> torch.Tensor:
    """Stack tensors of shape (..., h_i, w_i) into one batch, padding bottom / right with ``value``.

    The common size is the largest h and w, rounded up to multiples of ``size_divisibility``.
    Returns: Tensor (N, ..., H, W).
    """
    if len(tensors) == 0:
        raise ValueError("stack_padded needs at least one tensor")
    height = max(t.shape[-2] for t in tensors)
    width = max(t.shape[-1] for t in tensors)
    height, width = _padded_size(height, width, size_divisibility)
    batch = tensors[0].new_full((len(tensors), *tensors[0].shape[:-2], height, width), value)
    for slot, t in zip(batch, tensors):
        slot[..., : t.shape[-2], : t.shape[-1]].copy_(t)
    return batch
