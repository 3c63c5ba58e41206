"""Semantic segmentation evaluator: mIoU, fwIoU, mean and pixel accuracy from one confusion matrix
(:mod:`.confusion`, mmseg's mIoU convention)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .base import GatheringEvaluator, Results, headline, metrics_table
from .confusion import argmax_labels, confusion_matrix, sem_seg_metrics

__all__ = ["SemSegEvaluator", "sem_seg_metrics"]

logger = logging.getLogger(__name__)

GroundTruthReader = Callable[[Mapping[str, Any], tuple[int, int]], np.ndarray]
"""``reader(input_dict, (H, W)) -> (H, W)`` integer train ids (or the ignore label)."""


class SemSegEvaluator(GatheringEvaluator):
    """mIoU, fwIoU, mean and pixel accuracy of ``output["sem_seg"]`` against the dataset's labels.

    Ground truth is read through :func:`uper_parsing.data.read_sem_seg` from
    ``input["sem_seg_file_name"]`` at its original size, which is the size the model returns
    ``sem_seg`` (K, height, width) scores at; a ``gt_reader`` replaces that (e.g. Panoptic FPN's
    semantic map, derived from the panoptic labels).
    """

    results_file = "sem_seg_evaluation.json"

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
        super().__init__(dataset_name, output_dir=output_dir, distributed=distributed)
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
        if ignore_label is None:
            ignore_label = getattr(self._metadata, "ignore_label", 255)
        self._ignore_label = ignore_label
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
            pred = argmax_labels(scores)
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
            self._conf_matrix += confusion_matrix(
                pred, gt, self._num_classes, self._ignore_label, label_name
            )

    def _read_gt(self, file_name: str, hw: tuple[int, int]) -> np.ndarray:
        """Ground truth (H, W) int64 train ids, through the project's one label reader."""
        from ..data import read_sem_seg

        gt = np.asarray(read_sem_seg(file_name, self._metadata, expected_hw=hw), dtype=np.int64)
        if gt.shape != hw:
            raise ValueError(f"Label {file_name} is {gt.shape}, the prediction is {hw}.")
        return gt

    @property
    def conf_matrix(self) -> np.ndarray:
        """This process's (K+1, K+1) ``[pred, gt]`` counts so far."""
        return self._conf_matrix

    def local_state(self) -> np.ndarray:
        return self._conf_matrix

    def merge_states(self, states: list[np.ndarray]) -> np.ndarray:
        return np.sum(states, axis=0)

    def score(self, state: np.ndarray) -> Results:
        if state[: self._num_classes, : self._num_classes].sum() == 0:
            logger.warning(
                "SemSegEvaluator on %s saw no labelled pixels; no metrics.", self._dataset_name
            )
            return {}
        return {"sem_seg": sem_seg_metrics(state, self._class_names)}

    def log_results(self, results: Results) -> None:
        metrics = results["sem_seg"]
        rows = [
            (name, [metrics.get(f"IoU-{name}"), metrics.get(f"ACC-{name}")])
            for name in self._class_names
        ]
        lines = [f"Semantic segmentation on {self._dataset_name}: {headline(metrics)}"]
        logger.info("\n".join(lines + metrics_table(["IoU", "ACC"], rows)))
