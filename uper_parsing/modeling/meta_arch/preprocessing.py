"""Batch preparation shared by the meta-architectures: normalise + pad images, pad label maps."""

from __future__ import annotations

import torch

from ...layers import stack_padded

__all__ = ["normalize_and_pad", "stack_label_maps", "same_size_groups"]


def normalize_and_pad(
    batched_inputs: list[dict],
    pixel_mean: torch.Tensor,
    pixel_std: torch.Tensor,
    size_divisibility: int,
) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Normalise each ``image`` (on the device of ``pixel_mean``) and pad the batch with zeros.

    Args:
        batched_inputs: dicts with ``image`` Tensor (3, h_i, w_i).
        pixel_mean, pixel_std: Tensor (3, 1, 1) on the 0-255 scale.

    Returns: Tensor (N, 3, H, W) with H, W multiples of ``size_divisibility``, and the (h_i, w_i)
        of every image inside it.
    """
    device = pixel_mean.device
    images = [
        (x["image"].to(device, non_blocking=True) - pixel_mean) / pixel_std for x in batched_inputs
    ]
    sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
    return stack_padded(images, size_divisibility, 0.0), sizes


def stack_label_maps(
    batched_inputs: list[dict],
    key: str,
    image_sizes: list[tuple[int, int]],
    *,
    size_divisibility: int,
    ignore_value: int,
    device: torch.device,
) -> torch.Tensor:
    """Stack the label maps ``x[key]`` (integer (h_i, w_i), each the size of its image, widened
    to int64 on ``device``), padded with ``ignore_value``; an error names an input without the
    key or with a size mismatch.

    Returns: Tensor (N, H, W) long, the size of the padded image batch.
    """
    targets = []
    for i, (x, size) in enumerate(zip(batched_inputs, image_sizes)):
        if key not in x:
            raise ValueError(f"training input {i} has no '{key}'")
        target = x[key].to(device, non_blocking=True).long()
        if tuple(target.shape[-2:]) != size:
            raise ValueError(f"input {i}: {key} {tuple(target.shape)} != image size {size}")
        targets.append(target)
    return stack_padded(targets, size_divisibility, ignore_value)


def same_size_groups(sizes: list[tuple[int, int]]) -> list[list[int]]:
    """Indices of the images of each distinct (h, w), in order of first appearance: images of one
    size stack into a batch without padding, so inference that must not pad (mmseg's test) still
    runs them together, with the same results as one by one."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, size in enumerate(sizes):
        groups.setdefault(tuple(size), []).append(i)
    return list(groups.values())
