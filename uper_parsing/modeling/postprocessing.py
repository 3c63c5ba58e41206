"""Bring model outputs back to the size the caller asked for."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image

from ..layers import resize_to

__all__ = [
    "combine_semantic_and_instance_outputs",
    "detector_postprocess",
    "sem_seg_postprocess",
]


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


def detector_postprocess(
    detections: Mapping[str, torch.Tensor],
    img_size: Sequence[int],
    output_height: int,
    output_width: int,
    *,
    mask_threshold: float = 0.5,
) -> dict[str, torch.Tensor]:
    """Bring one image's detections from the network input size to the requested size.

    Args:
        detections: torchvision RoIHeads output of one image: ``boxes`` (N, 4) XYXY in the
            network input's pixels, ``scores`` (N,), ``labels`` (N,), and optionally ``masks``
            (N, 1, M, M) mask probabilities inside each box.
        img_size: (h, w) of the image inside the padded batch (what ``boxes`` refer to).
        output_height, output_width: the size to return (the original image size).
        mask_threshold: probability above which a pasted mask pixel is foreground.

    Returns:
        ``boxes`` (N, 4) XYXY scaled and clipped to the output size, ``scores``, ``labels`` and,
        when given, ``masks`` bool (N, output_height, output_width).
    """
    scale_x = output_width / img_size[1]
    scale_y = output_height / img_size[0]
    boxes = detections["boxes"] * torch.tensor(
        [scale_x, scale_y, scale_x, scale_y], device=detections["boxes"].device
    )
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, output_width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, output_height)
    out = {"boxes": boxes, "scores": detections["scores"], "labels": detections["labels"]}
    if "masks" in detections:
        masks = detections["masks"]
        if masks.shape[0] == 0:
            out["masks"] = masks.new_zeros((0, output_height, output_width), dtype=torch.bool)
        else:
            pasted = paste_masks_in_image(masks, boxes, (output_height, output_width), padding=1)
            out["masks"] = pasted[:, 0] > mask_threshold
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
    seg_map = torch.zeros(semantic.shape, dtype=torch.int32, device=semantic.device)
    segments: list[dict[str, Any]] = []
    scores = instances["scores"]
    masks = instances["masks"].to(device=semantic.device, dtype=torch.bool)
    if masks.shape[0] and tuple(masks.shape[1:]) != tuple(semantic.shape):
        raise ValueError(
            f"instance masks are {tuple(masks.shape[1:])}, the semantic map {tuple(semantic.shape)}"
        )
    for index in torch.argsort(scores, descending=True).tolist():
        score = float(scores[index])
        if score < instances_score_thresh:
            break
        mask = masks[index]
        mask_area = int(mask.sum())
        if mask_area == 0:
            continue
        free = mask & (seg_map == 0)
        free_area = int(free.sum())
        if free_area == 0 or (mask_area - free_area) / mask_area > overlap_threshold:
            continue
        seg_map[free] = len(segments) + 1
        segments.append(
            {
                "id": len(segments) + 1,
                "isthing": True,
                "category_id": int(instances["labels"][index]),
                "area": free_area,
                "score": score,
                "instance_id": index,
            }
        )
    for label in torch.unique(semantic).tolist():
        if label <= things_label:
            continue
        region = (semantic == label) & (seg_map == 0)
        area = int(region.sum())
        if area < stuff_area_thresh:
            continue
        seg_map[region] = len(segments) + 1
        segments.append(
            {
                "id": len(segments) + 1,
                "isthing": False,
                "category_id": int(label) - things_label - 1,
                "area": area,
            }
        )
    return seg_map, segments
