"""Losses and activations of the part head, whose logits are grouped per object."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ...layers import resize_to

__all__ = ["check_object_parts", "grouped_part_softmax", "grouped_part_cross_entropy"]


def check_object_parts(object_parts: Sequence[Sequence[int]]) -> int:
    """Check that ``object_parts`` (for each object, the global part ids it owns) splits the
    part ids 0..P-1 into disjoint groups, each part owned by exactly one object.

    Returns: P, the number of parts.
    """
    ids = sorted(int(p) for parts in object_parts for p in parts)
    if ids != list(range(len(ids))):
        raise ValueError(
            f"object_parts must own every part id 0..{len(ids) - 1} exactly once, got {ids}"
        )
    return len(ids)


def grouped_part_softmax(
    logits: torch.Tensor, object_parts: Sequence[Sequence[int]]
) -> torch.Tensor:
    """Softmax within each object's part slice.

    Args:
        logits: Tensor (N, P, h, w) part logits, channel = global part id.
        object_parts: for each object, the global part ids it owns (a partition of 0..P-1).

    Returns: Tensor (N, P, h, w); for each object o, the channels ``object_parts[o]`` sum to 1.
    """
    probs = torch.empty_like(logits)
    for parts in object_parts:
        if parts:
            index = torch.as_tensor(parts, device=logits.device)
            probs[:, index] = logits[:, index].softmax(dim=1)
    return probs


def grouped_part_cross_entropy(
    logits: torch.Tensor,
    object_targets: torch.Tensor,
    part_targets: torch.Tensor,
    object_parts: Sequence[Sequence[int]],
) -> torch.Tensor:
    """Part cross-entropy within ground-truth objects.

    For each object o with parts, over the pixels whose ground-truth object is o and whose
    ground-truth part is one of o's parts, the cross-entropy of o's logit slice against the
    part's position in ``object_parts[o]``. Other pixels (ignore labels, parts of another object,
    objects without parts) give no loss. The sum is divided by the number of such pixels over all
    objects of the batch.

    Args:
        logits: Tensor (N, P, h, w) at any stride; resized to the target size with ``resize_to``.
        object_targets: Tensor (N, H, W) long object ids (any value outside 0..K-1 is ignored).
        part_targets: Tensor (N, H, W) long global part ids (any value outside 0..P-1 is ignored).
        object_parts: for each object, the global part ids it owns (a partition of 0..P-1).

    Returns: scalar Tensor; 0 with a gradient path when no pixel counts.
    """
    logits = resize_to(logits, part_targets.shape[-2:])
    num_parts = logits.shape[1]
    owner = torch.full((num_parts,), -1, dtype=torch.long, device=logits.device)
    local = torch.zeros(num_parts, dtype=torch.long, device=logits.device)
    for obj, parts in enumerate(object_parts):
        owner[list(parts)] = obj
        local[list(parts)] = torch.arange(len(parts), device=logits.device)
    part_in_range = (part_targets >= 0) & (part_targets < num_parts)
    part_ids = torch.where(part_in_range, part_targets, 0)
    valid = part_in_range & (owner[part_ids] == object_targets)
    pixels = logits.permute(0, 2, 3, 1)[valid]  # (M, P)
    pixel_objects = object_targets[valid]
    pixel_local = local[part_ids[valid]]
    total = logits.sum() * 0.0
    for obj, parts in enumerate(object_parts):
        if not parts:
            continue
        rows = pixel_objects == obj
        group = pixels[rows][:, list(parts)]
        total = total + F.cross_entropy(group, pixel_local[rows], reduction="sum")
    return total / max(int(valid.sum()), 1)
