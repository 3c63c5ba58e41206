"""Bring model outputs back to the size the caller asked for."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..layers import resize_to

__all__ = [
    "PASTE_CHUNK_BYTES",
    "combine_semantic_and_instance_outputs",
    "detector_postprocess",
    "paste_masks_in_image",
    "sem_seg_postprocess",
]

# Working memory of one chunk of the full-image paste (the CUDA path): a float32 sampling grid (two
# values) and a float32 result (one value) per pixel and mask.
PASTE_CHUNK_BYTES = 1024**3
_PASTE_BYTES_PER_PIXEL = 3 * 4
# Stands in for an empty or non-finite box: it lies left of and above every pixel centre.
_OFF_IMAGE_BOX = (-2.0, -2.0, -1.0, -1.0)


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


def _sampling_grid(boxes: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """grid_sample's grid for the pixel rows ``ys`` (h,) and columns ``xs`` (w,) of each box.

    A pixel's centre (x + 0.5, y + 0.5) is mapped into its box (N, 4) XYXY so that the box edges
    are the mask's outer edges (-1 and 1 with align_corners=False).

    Returns: Tensor (N, h, w, 2) of (x, y) in [-1, 1] inside the box.
    """
    x0, y0, x1, y1 = boxes[:, :, None].unbind(dim=1)
    gx = (xs + 0.5 - x0) / (x1 - x0) * 2 - 1
    gy = (ys + 0.5 - y0) / (y1 - y0) * 2 - 1
    n, h, w = boxes.shape[0], ys.numel(), xs.numel()
    return torch.stack([gx[:, None, :].expand(n, h, w), gy[:, :, None].expand(n, h, w)], dim=3)


def _sample(masks: torch.Tensor, grid: torch.Tensor, threshold: float) -> torch.Tensor:
    """Bilinear samples of ``masks`` (N, 1, M, M) at ``grid`` (N, h, w, 2), zero outside.

    Returns: Tensor (N, h, w) bool (prob >= threshold), or uint8 prob * 255 if threshold < 0.
    """
    probs = F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if threshold >= 0:
        return probs[:, 0] >= threshold
    return (probs[:, 0] * 255).to(torch.uint8)


def _support(boxes: torch.Tensor, mask_hw: Sequence[int], image_hw: Sequence[int]) -> torch.Tensor:
    """The pixels where each box's mask samples can be non-zero, clipped to the image.

    Bilinear sampling reaches half a mask cell beyond the box; one more pixel covers rounding.
    (detectron2 keeps one pixel around the box: the same masks for thresholds >= 0.5, but lower
    thresholds and the uint8 probabilities would lose the pixels between.)

    Returns: Tensor (N, 4) int64 (x_start, y_start, x_end, y_end), ends excluded.
    """
    cells = (boxes[:, 2:] - boxes[:, :2]) / boxes.new_tensor([mask_hw[1], mask_hw[0]])
    starts = (boxes[:, :2] - cells / 2).floor() - 1
    ends = (boxes[:, 2:] + cells / 2).ceil() + 1
    limits = boxes.new_tensor([image_hw[1], image_hw[0]])
    starts = torch.minimum(starts.clamp(min=0), limits)
    ends = torch.minimum(ends.clamp(min=0), limits)
    return torch.cat([starts, ends], dim=1).long()


def _paste_per_box(
    out: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor, threshold: float
) -> None:
    """Fill ``out`` (N, H, W) one mask at a time, computing each only on its support."""
    xs = torch.arange(out.shape[2], dtype=torch.float32, device=out.device)
    ys = torch.arange(out.shape[1], dtype=torch.float32, device=out.device)
    supports = _support(boxes, masks.shape[-2:], out.shape[1:]).tolist()
    for i, (x_start, y_start, x_end, y_end) in enumerate(supports):
        if x_start < x_end and y_start < y_end:
            grid = _sampling_grid(boxes[i : i + 1], ys[y_start:y_end], xs[x_start:x_end])
            out[i, y_start:y_end, x_start:x_end] = _sample(masks[i : i + 1], grid, threshold)[0]


def _paste_full_image(
    out: torch.Tensor, masks: torch.Tensor, boxes: torch.Tensor, threshold: float
) -> None:
    """Fill ``out`` (N, H, W) over the whole image, in chunks of at most ``PASTE_CHUNK_BYTES``."""
    n, height, width = out.shape
    per_chunk = max(1, PASTE_CHUNK_BYTES // (height * width * _PASTE_BYTES_PER_PIXEL))
    xs = torch.arange(width, dtype=torch.float32, device=out.device)
    ys = torch.arange(height, dtype=torch.float32, device=out.device)
    for start in range(0, n, per_chunk):
        chunk = slice(start, start + per_chunk)
        out[chunk] = _sample(masks[chunk], _sampling_grid(boxes[chunk], ys, xs), threshold)


def paste_masks_in_image(
    masks: torch.Tensor,
    boxes: torch.Tensor,
    image_shape: Sequence[int],
    threshold: float = 0.5,
    *,
    per_box: bool | None = None,
) -> torch.Tensor:
    """Paste fixed-size mask probabilities into the image at their boxes (detectron2's paste).

    Each pixel's centre (x + 0.5, y + 0.5) is mapped into its float box, the box spanning the
    whole mask, and the mask is sampled there bilinearly (``grid_sample``, align_corners=False,
    zero outside the mask). Empty or non-finite boxes paste nothing.

    Args:
        masks: Tensor (N, M, M) probabilities in [0, 1] (any M x M'; sampled in float32).
        boxes: Tensor (N, 4) XYXY float boxes in image pixels; may extend past the image.
        image_shape: (H, W) of the image.
        threshold: a pixel is foreground where its probability is >= threshold. A negative
            threshold returns the probabilities instead, as uint8 ``(prob * 255)`` truncated.
        per_box: compute each mask only where it can be non-zero (its box, half a mask cell and
            one pixel around it), one mask at a time; otherwise all masks over the whole image,
            vectorised in chunks of at most ``PASTE_CHUNK_BYTES``. None (default): per box on the
            CPU, full image elsewhere. Both give the same result.

    Returns: Tensor (N, H, W) bool on the masks' device (uint8 when threshold < 0).
    """
    if masks.dim() != 3 or boxes.shape != (masks.shape[0], 4):
        raise ValueError(
            f"expected masks (N, M, M) and boxes (N, 4), got {tuple(masks.shape)} and "
            f"{tuple(boxes.shape)}"
        )
    height, width = int(image_shape[0]), int(image_shape[1])
    dtype = torch.bool if threshold >= 0 else torch.uint8
    out = torch.zeros((masks.shape[0], height, width), dtype=dtype, device=masks.device)
    if masks.shape[0] == 0 or height == 0 or width == 0:
        return out
    boxes = boxes.to(device=masks.device, dtype=torch.float32)
    usable = (boxes[:, 2:] > boxes[:, :2]).all(dim=1) & boxes.isfinite().all(dim=1)
    boxes = torch.where(usable[:, None], boxes, boxes.new_tensor(_OFF_IMAGE_BOX))
    if per_box is None:
        per_box = masks.device.type == "cpu"
    paste = _paste_per_box if per_box else _paste_full_image
    paste(out, masks[:, None].float(), boxes, threshold)
    return out


def detector_postprocess(
    detections: Mapping[str, torch.Tensor],
    img_size: Sequence[int],
    output_height: int,
    output_width: int,
    *,
    mask_threshold: float = 0.5,
) -> dict[str, torch.Tensor]:
    """Bring one image's detections from the network input size to the requested size.

    Boxes are scaled to the output size and clipped to it; detections whose box is then empty
    (width or height <= 0) are dropped, and the masks of the others are pasted with
    :func:`paste_masks_in_image` (detectron2's ``detector_postprocess``).

    Args:
        detections: torchvision RoIHeads output of one image: ``boxes`` (N, 4) XYXY in the
            network input's pixels, ``scores`` (N,), ``labels`` (N,), and optionally ``masks``
            (N, 1, M, M) mask probabilities inside each box.
        img_size: (h, w) of the image inside the padded batch (what ``boxes`` refer to).
        output_height, output_width: the size to return (the original image size).
        mask_threshold: probability at or above which a pasted mask pixel is foreground
            (negative: uint8 probabilities * 255 instead of bool masks).

    Returns:
        The K <= N kept detections: ``boxes`` (K, 4) XYXY scaled and clipped to the output size,
        ``scores`` (K,), ``labels`` (K,) and, when given, ``masks`` bool
        (K, output_height, output_width).
    """
    scale_x = output_width / img_size[1]
    scale_y = output_height / img_size[0]
    boxes = detections["boxes"] * torch.tensor(
        [scale_x, scale_y, scale_x, scale_y], device=detections["boxes"].device
    )
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, output_width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, output_height)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    out = {
        "boxes": boxes[keep],
        "scores": detections["scores"][keep],
        "labels": detections["labels"][keep],
    }
    if "masks" in detections:
        out["masks"] = paste_masks_in_image(
            detections["masks"][keep][:, 0],
            out["boxes"],
            (output_height, output_width),
            mask_threshold,
        )
    return out


def combine_semantic_and_instance_outputs(
    instances: Mapping[str, torch.Tensor],
    semantic: torch.Tensor,
    *,
    overlap_threshold: float = 0.5,
    stuff_area_thresh: int = 4096,
    instances_score_thresh: float = 0.5,
    things_label: int = 0,
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Panoptic segmentation from instances and a semantic map, instances first (Panoptic FPN).

    Instances are taken by decreasing score while their score is at least
    ``instances_score_thresh``; one whose mask is more than ``overlap_threshold`` covered by
    segments already placed is skipped, otherwise its free pixels become a segment. The pixels
    left are then filled with stuff from ``semantic``, one segment per stuff class, except the
    "things" label and stuff regions smaller than ``stuff_area_thresh`` pixels.

    Args:
        instances: ``scores`` (N,), ``labels`` (N,) thing ids, ``masks`` bool (N, H, W).
        semantic: (H, W) integer semantic labels: ``things_label`` for things, stuff class
            ``s`` as ``s + 1`` (the Panoptic FPN semantic map; values above ``things_label``).
        overlap_threshold: largest share of an instance's mask that may already be taken.
        stuff_area_thresh: smallest stuff region kept, in pixels.
        instances_score_thresh: lowest score of a merged instance.
        things_label: the semantic label of "things" (never becomes a stuff segment).

    Returns:
        ``seg_map`` int32 (H, W), 0 = void, segment ids 1, 2, ... in order of placement, and
        ``segments_info``: per segment ``id``, ``isthing``, ``category_id`` (thing id, or stuff
        id = semantic label - things_label - 1), ``area``, and for things ``score`` and
        ``instance_id`` (index into ``instances``).
    """
    scores = instances["scores"]
    masks = instances["masks"].to(device=semantic.device, dtype=torch.bool)
    if masks.shape[0] and tuple(masks.shape[1:]) != tuple(semantic.shape):
        raise ValueError(
            f"instance masks are {tuple(masks.shape[1:])}, the semantic map {tuple(semantic.shape)}"
        )
    segments: list[dict[str, Any]] = []
    seg_map = _place_instances(
        scores, masks, instances["labels"], overlap_threshold, instances_score_thresh, segments
    )
    _place_stuff(semantic, seg_map, stuff_area_thresh, things_label, segments)
    return seg_map, segments


def _place_instances(
    scores: torch.Tensor,
    masks: torch.Tensor,
    labels: torch.Tensor,
    overlap_threshold: float,
    score_thresh: float,
    segments: list[dict[str, Any]],
) -> torch.Tensor:
    """The instance half of :func:`combine_semantic_and_instance_outputs`: the segment map of
    the instances placed, their entries appended to ``segments``.

    Each instance's decision depends on the pixels placed before it, so they are taken one after
    another, but on the device without a host sync: the decisions are read once at the end (the
    loop of detectron2's reads three numbers per instance, and Panoptic FPN at a detector's 100
    detections spent more host time there than in the network)."""
    order = torch.argsort(scores, descending=True)
    ordered_scores = scores[order]
    count = int((~(ordered_scores < score_thresh)).int().cumprod(0).sum())
    order = order[:count]  # the best, down to the first below the threshold
    selected = order.tolist()
    taken = torch.zeros(masks.shape[1:], dtype=torch.bool, device=masks.device)
    placed_by = torch.zeros(masks.shape[1:], dtype=torch.int32, device=masks.device)
    free_areas, kept = [], []
    for rank, index in enumerate(selected):
        mask = masks[index]
        free = mask > taken  # mask & ~taken
        free_area = free.sum()
        area = mask.sum()  # (one reduction per mask: a batched one over bool is slow on CPUs)
        # skipped: an empty mask, or more than overlap_threshold of it already taken
        keep = (free_area > 0) & ((area - free_area) / area.double() <= overlap_threshold)
        placed = free.logical_and_(keep)
        taken |= placed
        placed_by.masked_fill_(placed, rank + 1)
        free_areas.append(free_area)
        kept.append(keep)
    if not count:
        return placed_by
    decisions = torch.stack([torch.stack(kept).long(), torch.stack(free_areas)]).tolist()
    ids = torch.zeros(count + 1, dtype=torch.int32)  # rank + 1 -> segment id (0: none)
    selected_scores, selected_labels = ordered_scores[:count].tolist(), labels[order].tolist()
    for rank, (keep, free_area) in enumerate(zip(*decisions)):
        if keep:
            ids[rank + 1] = len(segments) + 1
            segments.append(
                {
                    "id": len(segments) + 1,
                    "isthing": True,
                    "category_id": int(selected_labels[rank]),
                    "area": free_area,
                    "score": selected_scores[rank],
                    "instance_id": selected[rank],
                }
            )
    return ids.to(masks.device)[placed_by]


def _place_stuff(
    semantic: torch.Tensor,
    seg_map: torch.Tensor,
    stuff_area_thresh: int,
    things_label: int,
    segments: list[dict[str, Any]],
) -> None:
    """The stuff half of :func:`combine_semantic_and_instance_outputs`: the pixels left of each
    stuff class present in ``semantic`` become one segment (in increasing label order) when they
    are at least ``stuff_area_thresh``; ``seg_map`` and ``segments`` are filled in place. Stuff
    classes never overlap, so their areas are counted at once."""
    labels, position = torch.unique(semantic, return_inverse=True)
    free = (seg_map == 0).flatten().long()
    counts = torch.bincount(position.flatten() * 2 + free, minlength=2 * len(labels))
    free_counts = counts.view(-1, 2)[:, 1].tolist()
    ids = torch.zeros(len(labels), dtype=torch.int32)  # position of a label -> segment id
    for index, (label, area) in enumerate(zip(labels.tolist(), free_counts)):
        if label <= things_label or area < stuff_area_thresh:
            continue
        ids[index] = len(segments) + 1
        segments.append(
            {
                "id": len(segments) + 1,
                "isthing": False,
                "category_id": int(label) - things_label - 1,
                "area": area,
            }
        )
    stuff = ids.to(seg_map.device)[position]
    seg_map.copy_(torch.where((seg_map == 0) & (stuff > 0), stuff, seg_map))
