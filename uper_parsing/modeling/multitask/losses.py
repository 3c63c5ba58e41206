"""Losses and activations of the part head, whose logits are grouped per object."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...layers import resize_to

__all__ = [
    "PART_LOSS_NORMS",
    "check_object_parts",
    "grouped_part_softmax",
    "grouped_part_cross_entropy",
]


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

    The slices are gathered, normalised, concatenated and put back in channel order by one more
    gather (no in-place writes), so a traced or exported graph keeps its sizes dynamic.
    """
    groups = [list(parts) for parts in object_parts if parts]
    if not groups:
        return torch.empty_like(logits)
    device = logits.device
    grouped = torch.cat(
        [
            logits.index_select(1, torch.as_tensor(parts, device=device)).softmax(dim=1)
            for parts in groups
        ],
        dim=1,
    )
    order = [p for parts in groups for p in parts]  # channel of each grouped position
    position = sorted(range(len(order)), key=order.__getitem__)  # grouped position of each channel
    return grouped.index_select(1, torch.as_tensor(position, device=device))


PART_LOSS_NORMS = ("object", "pixel")


def grouped_part_cross_entropy(
    logits: torch.Tensor,
    object_targets: torch.Tensor,
    part_targets: torch.Tensor,
    object_parts: Sequence[Sequence[int]],
    *,
    normalize: str = "object",
) -> torch.Tensor:
    """Part cross-entropy within ground-truth objects (CSAIL unifiedparsing's part loss).

    A pixel counts for object o when its ground-truth object is o, its ground-truth part is one
    of o's parts (o's first part is its background "-") and the image is *valid* for o: some pixel
    of o carries one of o's real parts (CSAIL's ``valid_part``, computed here at the targets'
    resolution). Its loss is the cross-entropy of o's logit slice against the part's position in
    ``object_parts[o]``. Pixels of other objects' parts and ignore labels give no loss.

    Args:
        logits: Tensor (N, P, h, w) at any stride; resized to the target size with ``resize_to``.
        object_targets: Tensor (N, H, W) long object ids (any value outside 0..K-1 is ignored).
        part_targets: Tensor (N, H, W) long global part ids (any value outside 0..P-1 is ignored).
        object_parts: for each object, the global part ids it owns, "-" first (a partition of
            0..P-1).
        normalize: "object" (CSAIL): for each object, the sum over its counted pixels divided by
            their number, summed over objects; "pixel": one sum divided by the number of counted
            pixels of all objects (weights frequent objects more).

    Returns: scalar Tensor (float32); 0 with a gradient path when no pixel counts.
    """
    if normalize not in PART_LOSS_NORMS:
        raise ValueError(f"normalize must be one of {PART_LOSS_NORMS}, got '{normalize}'")
    logits = resize_to(logits.contiguous(), part_targets.shape[-2:])  # see sem_seg_cross_entropy
    device, (batch, num_parts) = logits.device, logits.shape[:2]
    num_objects = len(object_parts)
    owner = torch.full((num_parts,), -1, dtype=torch.long)
    local = torch.zeros(num_parts, dtype=torch.long)
    for obj, parts in enumerate(object_parts):
        owner[list(parts)] = obj
        local[list(parts)] = torch.arange(len(parts))
    owner, local = owner.to(device), local.to(device)
    owned_by = torch.zeros(num_objects, num_parts, dtype=torch.bool, device=device)
    owned_by[owner.clamp(min=0), torch.arange(num_parts, device=device)] = owner >= 0

    in_range = (part_targets >= 0) & (part_targets < num_parts)
    part_ids = torch.where(in_range, part_targets, 0)
    own = in_range & (owner[part_ids] == object_targets)
    objects = torch.where(own, object_targets, 0)
    image_object = torch.arange(batch, device=device).view(-1, 1, 1) * num_objects + objects
    valid = torch.zeros(batch * num_objects, dtype=torch.bool, device=device)
    valid[image_object[own & (local[part_ids] > 0)]] = True
    counted = own & valid[image_object]

    pixels = logits.permute(0, 2, 3, 1)[counted].float()  # (M, P)
    pixel_objects = objects[counted]
    pixel_parts = part_ids[counted]
    group = pixels.masked_fill(~owned_by[pixel_objects], float("-inf"))
    ce = torch.logsumexp(group, dim=1) - pixels.gather(1, pixel_parts[:, None])[:, 0]
    zero = logits.sum().float() * 0.0
    if normalize == "pixel":
        return zero + ce.sum() / max(ce.numel(), 1)
    # Each pixel weighted by 1 / its object's pixel count (a gather: no atomics in the backward)
    counts = torch.bincount(pixel_objects, minlength=num_objects).clamp(min=1)
    return zero + (ce / counts[pixel_objects]).sum()
