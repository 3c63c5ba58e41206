"""Per-class NMS that returns only the best detections, looking at as few candidates as suffice."""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms

__all__ = ["batched_nms_top"]


def batched_nms_top(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    idxs: torch.Tensor,
    iou_threshold: float,
    top: int,
    *,
    first_candidates: int | None = None,
) -> torch.Tensor:
    """``torchvision.ops.batched_nms(boxes, scores, idxs, iou_threshold)[:top]``, the same
    indices, computed on the highest-scoring candidates first.

    Greedy NMS decides on a box from the boxes that score higher only, so NMS over the ``k``
    best candidates decides on each of them as NMS over all of them does. When ``top`` of them
    survive, they are the ``top`` best survivors of all: no candidate outside scores higher.
    Otherwise ``k`` grows fourfold until they do or all candidates are in. (Equal scores are
    ordered as ``batched_nms`` orders them, which neither form specifies.)

    The second-stage detector at a low score threshold is why: (RoI, class) pairs scoring above
    0 are 1000 x 80 per image, which ``batched_nms`` runs as one NMS per class (80 kernels, each
    with a host sync); the best 1000 go through one NMS.

    Args:
        boxes: Tensor (N, 4) XYXY; scores: Tensor (N,); idxs: Tensor (N,) the category of each
            box (boxes of different categories never suppress each other).
        iou_threshold: boxes overlapping a better one of their category by more IoU are dropped.
        top: how many survivors to return at most.
        first_candidates: how many candidates the first round takes (default ``10 * top``).

    Returns: Tensor (min(top, survivors),) int64 indices into ``boxes``, by decreasing score.
    """
    count = scores.numel()
    candidates = first_candidates if first_candidates is not None else 10 * top
    while 0 < candidates < count:
        best = scores.topk(candidates).indices
        keep = batched_nms(boxes[best], scores[best], idxs[best], iou_threshold)
        if keep.numel() >= top:
            return best[keep[:top]]
        candidates *= 4
    return batched_nms(boxes, scores, idxs, iou_threshold)[:top]
