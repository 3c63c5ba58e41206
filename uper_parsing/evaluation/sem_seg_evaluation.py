"""Semantic segmentation metrics from a confusion matrix, with mmseg's mIoU convention: a class
predicted but absent from the ground truth counts as IoU 0 (detectron2 leaves it out)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..utils import comm
from .evaluator import DatasetEvaluator

__all__ = ["SemSegEvaluator", "sem_seg_metrics"]

logger = logging.getLogger(__name__)

GroundTruthReader = Callable[[Mapping[str, Any], tuple[int, int]], np.ndarray]
"""``reader(input_dict, (H, W)) -> (H, W)`` integer train ids (or the ignore label)."""


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


class SemSegEvaluator(DatasetEvaluator):
    """mIoU, fwIoU, mean and pixel accuracy of ``output["sem_seg"]`` against the dataset's labels.

    Ground truth is read through :func:`uper_parsing.data.read_sem_seg` from
    ``input["sem_seg_file_name"]`` at its original size, which is the size the model returns
    ``sem_seg`` (K, height, width) scores at; a ``gt_reader`` replaces that (e.g. Panoptic FPN's
    semantic map, derived from the panoptic labels).
    """

    def __init__(
        self,
        dataset_name: str,
        *,
        distributed: bool = True,
        output_dir: str | None = None,
        num_classes: int | None = None,
        ignore_label: int | None = None,
        class_names: Sequence[str] | None = None,
        gt_reader: GroundTruthReader | None = None,
    ) -> None:
        """
        Args:
            dataset_name: name in ``MetadataCatalog``, source of class names and ignore label.
            distributed: gather confusion matrices from every process before computing metrics.
            output_dir: where ``sem_seg_evaluation.json`` is written (``None``: nothing is written).
            num_classes: overrides ``len(metadata.stuff_classes)``; classes without a name in
                the metadata are reported by id (``IoU-7``).
            ignore_label: overrides ``metadata.ignore_label``.
            class_names: the K class names, instead of ``metadata.stuff_classes`` (``num_classes``
                defaults to their number).
            gt_reader: ``reader(input_dict, (H, W)) -> (H, W)`` int ground truth, instead of
                reading ``input_dict["sem_seg_file_name"]`` with ``read_sem_seg``.
        """
        from ..data import MetadataCatalog

        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._metadata = MetadataCatalog.get(dataset_name)
        self._gt_reader = gt_reader
        stuff_classes = getattr(self._metadata, "stuff_classes", None)
        if class_names is not None:
            stuff_classes = list(class_names)
            if num_classes is not None and num_classes != len(stuff_classes):
                raise ValueError(
                    f"SemSegEvaluator got num_classes={num_classes} and {len(stuff_classes)} "
                    "class_names; they must agree."
                )
        if num_classes is None:
            if stuff_classes is None:
                raise ValueError(
                    f"Dataset {dataset_name!r} has no stuff_classes in its metadata; "
                    "pass num_classes to SemSegEvaluator."
                )
            num_classes = len(stuff_classes)
        # Metadata names where there are enough of them, class ids for the rest.
        names = [str(name) for name in (stuff_classes or [])][:num_classes]
        self._class_names = names + [str(index) for index in range(len(names), num_classes)]
        self._num_classes = num_classes
        self._ignore_label = (
            ignore_label
            if ignore_label is not None
            else getattr(self._metadata, "ignore_label", 255)
        )
        self._conf_matrix = self._empty_matrix()

    def _empty_matrix(self) -> np.ndarray:
        return np.zeros((self._num_classes + 1, self._num_classes + 1), dtype=np.int64)

    def reset(self) -> None:
        self._conf_matrix = self._empty_matrix()

    def process(self, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
        for input_dict, output in zip(inputs, outputs, strict=True):
            scores = output["sem_seg"]
            if scores.dim() != 3 or scores.shape[0] != self._num_classes:
                raise ValueError(
                    f"output['sem_seg'] must be (K={self._num_classes}, H, W) scores, "
                    f"got shape {tuple(scores.shape)} for {input_dict.get('file_name')}"
                )
            pred = scores.argmax(dim=0).to(device="cpu", dtype=torch.int64).numpy()
            if self._gt_reader is None:
                label_name = input_dict["sem_seg_file_name"]
                gt = self._read_gt(label_name, pred.shape)
            else:
                label_name = input_dict.get("sem_seg_file_name") or input_dict.get(
                    "pan_seg_file_name", input_dict.get("file_name")
                )
                gt = np.asarray(self._gt_reader(input_dict, pred.shape), dtype=np.int64)
                if gt.shape != pred.shape:
                    raise ValueError(
                        f"Label of {label_name} is {gt.shape}, the prediction is {pred.shape}."
                    )
            self._conf_matrix += self._confusion(pred, gt, label_name)

    def _read_gt(self, file_name: str, hw: tuple[int, int]) -> np.ndarray:
        """Ground truth (H, W) int64 train ids, through the project's one label reader."""
        from ..data import read_sem_seg

        gt = np.asarray(read_sem_seg(file_name, self._metadata, expected_hw=hw), dtype=np.int64)
        if gt.shape != hw:
            raise ValueError(f"Label {file_name} is {gt.shape}, the prediction is {hw}.")
        return gt

    def _confusion(self, pred: np.ndarray, gt: np.ndarray, file_name: str) -> np.ndarray:
        """(K+1, K+1) counts ``[pred, gt]`` with ground-truth ignore pixels in the last column."""
        k1 = self._num_classes + 1
        ignore = gt == self._ignore_label
        invalid = ~ignore & ((gt < 0) | (gt >= self._num_classes))
        if invalid.any():
            raise ValueError(
                f"{file_name}: ground-truth value {gt[invalid][0]} is neither a class id "
                f"< {self._num_classes} nor the ignore label {self._ignore_label}."
            )
        gt = np.where(ignore, self._num_classes, gt)
        flat = k1 * pred.reshape(-1) + gt.reshape(-1)
        return np.bincount(flat, minlength=k1 * k1).reshape(k1, k1)

    @property
    def conf_matrix(self) -> np.ndarray:
        """This process's (K+1, K+1) ``[pred, gt]`` counts so far."""
        return self._conf_matrix

    def evaluate(self) -> dict[str, dict[str, float]] | None:
        conf_matrix = self._conf_matrix
        if self._distributed:
            comm.synchronize()
            gathered = comm.all_gather(self._conf_matrix)
            if not comm.is_main_process():
                return None
            conf_matrix = np.sum(gathered, axis=0)
        if conf_matrix[: self._num_classes, : self._num_classes].sum() == 0:
            logger.warning(
                "SemSegEvaluator on %s saw no labelled pixels; no metrics.", self._dataset_name
            )
            return {}
        results = {"sem_seg": sem_seg_metrics(conf_matrix, self._class_names)}
        self._log_results(results["sem_seg"])
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            path = os.path.join(self._output_dir, "sem_seg_evaluation.json")
            with open(path, "w") as f:
                json.dump(results, f, indent=2)
        return results

    def _log_results(self, metrics: dict[str, float]) -> None:
        headline = ", ".join(f"{k} {metrics[k]:.2f}" for k in ("mIoU", "fwIoU", "mACC", "pACC"))
        lines = [f"Semantic segmentation on {self._dataset_name}: {headline}"]
        lines.append(f"{'class':<24}{'IoU':>8}{'ACC':>8}")
        for name in self._class_names:
            iou = metrics.get(f"IoU-{name}")
            acc = metrics.get(f"ACC-{name}")
            iou_text = f"{iou:8.2f}" if iou is not None else f"{'-':>8}"
            acc_text = f"{acc:8.2f}" if acc is not None else f"{'-':>8}"
            lines.append(f"{name[:23]:<24}{iou_text}{acc_text}")
        logger.info("\n".join(lines))
