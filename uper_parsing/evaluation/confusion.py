"""The one confusion-matrix helper of the evaluators: counts ``[pred, gt]`` with ``np.bincount``
and the semantic metrics read from them (mmseg's mIoU convention: a class predicted but absent
from the ground truth counts as IoU 0; detectron2 leaves it out).

Used by :class:`SemSegEvaluator` (semantic and Panoptic FPN's semantic branch) and by
:class:`MultiTaskEvaluator` (object, material and per-object part matrices).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "argmax_labels",
    "bincount_matrix",
    "check_labels",
    "confusion_matrix",
    "sem_seg_metrics",
]


def argmax_labels(scores: torch.Tensor | np.ndarray) -> np.ndarray:
    """Index of the highest score along the first dimension, as int64 on the host.

    Args:
        scores: (K, ...) scores, a tensor on any device or an array.

    Returns:
        np.ndarray (...) int64 class indices.
    """
    if isinstance(scores, torch.Tensor):
        return scores.detach().argmax(dim=0).to(device="cpu", dtype=torch.int64).numpy()
    return np.asarray(scores).argmax(axis=0).astype(np.int64)


def bincount_matrix(pred: np.ndarray, gt: np.ndarray, num_bins: int) -> np.ndarray:
    """(num_bins, num_bins) int64 ``[pred, gt]`` counts of two int arrays of one shape whose
    values all lie in [0, num_bins)."""
    flat = num_bins * pred.reshape(-1) + gt.reshape(-1)
    return np.bincount(flat, minlength=num_bins * num_bins).reshape(num_bins, num_bins)


def check_labels(gt: np.ndarray, num_classes: int, ignore_label: int, source: str) -> None:
    """Raise ``ValueError`` naming ``source`` and the value when a ground-truth value is neither a
    class id in [0, num_classes) nor ``ignore_label``."""
    invalid = (gt != ignore_label) & ((gt < 0) | (gt >= num_classes))
    if invalid.any():
        raise ValueError(
            f"{source}: ground-truth value {gt[invalid][0]} is neither a class id "
            f"< {num_classes} nor the ignore label {ignore_label}."
        )


def confusion_matrix(
    pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_label: int, source: str
) -> np.ndarray:
    """(K+1, K+1) int64 counts ``[pred, gt]`` of one image, ground-truth ``ignore_label`` pixels
    in the last column (the ignore bin).

    Args:
        pred: (H, W) int predicted classes in [0, K).
        gt: (H, W) int ground truth: classes in [0, K) or ``ignore_label`` (checked).
        num_classes: K.
        ignore_label: the ground-truth value of unlabelled pixels.
        source: what ``gt`` was read from, named in the error.
    """
    check_labels(gt, num_classes, ignore_label, source)
    gt = np.where(gt == ignore_label, num_classes, gt)
    return bincount_matrix(pred, gt, num_classes + 1)


def sem_seg_metrics(conf_matrix: np.ndarray, class_names: list[str]) -> dict[str, float]:
    """Metrics, in percent, from a confusion matrix.

    Args:
        conf_matrix: (K+1, K+1) int64 counts, ``[pred, gt]``; the last row / column is the ignore
            bin (ground-truth ignore pixels land in the last column and are left out).
        class_names: K names used in the per-class keys.

    Returns:
        ``mIoU``, ``fwIoU``, ``mACC``, ``pACC`` and ``IoU-<name>`` / ``ACC-<name>`` for every class
        where the value is defined. IoU is undefined (NaN, not in mIoU) for a class absent from both
        ground truth and prediction; a class predicted but absent from the ground truth has IoU 0.
        Accuracy is undefined for classes absent from the ground truth and ``mACC`` averages over
        the classes present there.
    """
    num_classes = len(class_names)
    counts = conf_matrix[:num_classes, :num_classes].astype(np.float64)
    tp = np.diag(counts)
    pos_gt = counts.sum(axis=0)
    pos_pred = counts.sum(axis=1)
    acc_valid = pos_gt > 0
    iou_valid = (pos_gt + pos_pred) > 0
    union = pos_gt + pos_pred - tp

    acc = np.full(num_classes, np.nan)
    iou = np.full(num_classes, np.nan)
    acc[acc_valid] = tp[acc_valid] / pos_gt[acc_valid]
    iou[iou_valid] = tp[iou_valid] / union[iou_valid]
    total_gt = pos_gt.sum()
    class_weights = pos_gt / total_gt

    results = {
        "mIoU": 100 * float(np.mean(iou[iou_valid])),
        "fwIoU": 100 * float(np.sum(iou[iou_valid] * class_weights[iou_valid])),
        "mACC": 100 * float(np.mean(acc[acc_valid])),
        "pACC": 100 * float(tp.sum() / total_gt),
    }
    for index, name in enumerate(class_names):
        if iou_valid[index]:
            results[f"IoU-{name}"] = 100 * float(iou[index])
    for index, name in enumerate(class_names):
        if acc_valid[index]:
            results[f"ACC-{name}"] = 100 * float(acc[index])
    return results
