"""Unified perceptual parsing metrics (UPerNet paper): scene, object, part, material, texture.

Each task is scored only over the images whose ``tasks`` include it. Object and material maps give
confusion matrices scored by :func:`sem_seg_metrics`; parts are scored within each object that has
parts and averaged over those objects (see :class:`MultiTaskEvaluator` for the exact convention);
scene and texture give top-1 accuracy.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..utils import comm
from .build import register_evaluator
from .evaluator import DatasetEvaluator
from .sem_seg_evaluation import sem_seg_metrics

__all__ = ["MultiTaskEvaluator", "part_metrics"]

logger = logging.getLogger(__name__)

_MAP_TASKS = ("object", "material")
_LABEL_TASKS = ("scene", "texture")


@dataclass
class _Counts:
    """Everything one process accumulates; summed over processes before scoring.

    ``conf``: per map task (object / material) a (K+1, K+1) ``[pred, gt]`` matrix, the last
    row / column the ignore bin. ``part_conf``: per object with parts a (n+2, n+2) ``[pred, gt]``
    matrix over its n parts, then the "not this object" bin, then the ignore bin. ``top1``: per
    label task (scene / texture) [correct, total]. ``images``: per task, images scored.
    """

    conf: dict[str, np.ndarray]
    part_conf: dict[int, np.ndarray]
    top1: dict[str, np.ndarray]
    images: dict[str, int] = field(default_factory=dict)

    def add(self, other: _Counts) -> None:
        for task, matrix in other.conf.items():
            self.conf[task] += matrix
        for obj, matrix in other.part_conf.items():
            self.part_conf[obj] += matrix
        for task, counts in other.top1.items():
            self.top1[task] += counts
        for task, count in other.images.items():
            self.images[task] = self.images.get(task, 0) + count


def _to_numpy(scores: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().to("cpu")
        scores = (scores.float() if scores.is_floating_point() else scores).numpy()
    return np.asarray(scores)


def _argmax(scores: torch.Tensor | np.ndarray) -> np.ndarray:
    """Index of the highest score along the first dimension, as int64."""
    if isinstance(scores, torch.Tensor):
        return scores.detach().argmax(dim=0).to(device="cpu", dtype=torch.int64).numpy()
    return np.asarray(scores).argmax(axis=0).astype(np.int64)


def _confusion(pred: np.ndarray, gt: np.ndarray, num_bins: int) -> np.ndarray:
    """(num_bins, num_bins) ``[pred, gt]`` counts of two int arrays with values in [0, num_bins)."""
    flat = num_bins * pred.reshape(-1) + gt.reshape(-1)
    return np.bincount(flat, minlength=num_bins * num_bins).reshape(num_bins, num_bins)


def part_metrics(conf_matrix: np.ndarray, part_names: list[str]) -> dict[str, float]:
    """Part metrics within one object, in percent, from its (n+2, n+2) ``[pred, gt]`` matrix.

    Rows / columns 0..n-1 are the object's parts, n is "not this object", n+1 the ignore bin.
    Per-part IoU follows :func:`sem_seg_metrics` (the "not this object" bin is passed to it as an
    extra class so that misses and false positives count, then left out of the mean);
    ``pAcc`` is the share of the object's labelled ground-truth part pixels given the right part.

    Returns:
        ``mIoU``, ``pAcc`` and ``IoU-<part>``; ``{}`` when the object has no ground-truth part
        pixels.
    """
    n = len(part_names)
    gt_pixels = conf_matrix[: n + 1, :n].sum()
    if gt_pixels == 0:
        return {}
    matrix = conf_matrix.copy()
    matrix[n, n] = 0  # "not this object" on both sides is no part of the score
    scored = sem_seg_metrics(matrix, [*part_names, "\0not-this-object"])
    ious = {f"IoU-{name}": scored[f"IoU-{name}"] for name in part_names if f"IoU-{name}" in scored}
    return {
        "mIoU": float(np.mean(list(ious.values()))),
        "pAcc": 100 * float(np.trace(conf_matrix[:n, :n]) / gt_pixels),
        **ious,
    }


@dataclass(frozen=True)
class _PartLayout:
    """Object ``obj`` owns global part ids ``part_ids`` (its slice of the part scores)."""

    obj: int
    part_ids: tuple[int, ...]
    names: tuple[str, ...]


@register_evaluator("multitask")
class MultiTaskEvaluator(DatasetEvaluator):
    """Scene, object, part, material and texture metrics of a unified perceptual parser.

    Inputs carry ``tasks`` and, per labelled task, the dataset-dict fields ``object_file_name``,
    ``part_file_name``, ``material_file_name`` (read at the original size through
    :func:`uper_parsing.data.read_multitask_label`), ``scene`` and ``texture`` (ints). Outputs are
    the model's per-image dicts: ``object`` (K_obj, H, W), ``part`` (P, H, W), ``material``
    (K_mat, H, W), ``scene`` (K_scene,), ``texture`` (K_tex,) scores.

    Part convention (per object o with parts, following the paper's "within each object"): a pixel
    is predicted as part p of o when the predicted object (argmax of ``object``) is o and p is the
    argmax over o's slice of ``part``; it is ground truth part p of o when the ground-truth object
    is o and its ground-truth part is p. Pixels where only one side says o go against a "not o" bin:
    ground truth o / predicted elsewhere is a miss of the ground-truth part, predicted o / ground
    truth another object is a false positive of the predicted part. Ground-truth object o with no
    part label (or a part of another object), and ground-truth object unlabelled, are ignored.
    Per object: IoU per part (the :func:`sem_seg_metrics` convention), mIoU over its parts, pixel
    accuracy over its labelled ground-truth part pixels; ``part`` mIoU / pAcc average these over
    the objects with ground-truth part pixels in the split.

    Results, in percent, with tasks that have no labelled images left out::

        {"scene": {"top1"}, "object": {"mIoU", "pAcc", "IoU-<cls>", ...},
         "part": {"mIoU", "pAcc", "mIoU-<object>", "pAcc-<object>", ...},
         "material": {"mIoU", "pAcc", "IoU-<cls>", ...}, "texture": {"top1"}}
    """

    def __init__(
        self, dataset_name: str, *, distributed: bool = True, output_dir: str | None = None
    ) -> None:
        """
        Args:
            dataset_name: name in ``MetadataCatalog`` (the multi-task metadata contract).
            distributed: gather counts from every process before computing metrics.
            output_dir: where ``multitask_evaluation.json`` is written (``None``: nothing).
        """
        from ..data import MetadataCatalog

        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._metadata = MetadataCatalog.get(dataset_name)
        meta = self._metadata
        self._ignore_label = getattr(meta, "ignore_label", 255)
        self._class_names = {
            "object": [str(c) for c in meta.object_classes],
            "material": [str(c) for c in meta.material_classes],
        }
        self._object_names = self._class_names["object"]
        part_classes = [str(c) for c in meta.part_classes]
        self._parts = [
            _PartLayout(obj, tuple(ids), tuple(part_classes[i] for i in ids))
            for obj, ids in enumerate(meta.object_parts)
            if len(ids) > 0
        ]
        self._counts = self._empty_counts()

    def _empty_counts(self) -> _Counts:
        return _Counts(
            conf={
                task: np.zeros((len(names) + 1,) * 2, dtype=np.int64)
                for task, names in self._class_names.items()
            },
            part_conf={
                layout.obj: np.zeros((len(layout.part_ids) + 2,) * 2, dtype=np.int64)
                for layout in self._parts
            },
            top1={task: np.zeros(2, dtype=np.int64) for task in _LABEL_TASKS},
        )

    def reset(self) -> None:
        self._counts = self._empty_counts()

    def process(self, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
        for input_dict, output in zip(inputs, outputs, strict=True):
            tasks = set(input_dict.get("tasks", ()))
            for task in tasks & {*_MAP_TASKS, *_LABEL_TASKS, "part"}:
                self._counts.images[task] = self._counts.images.get(task, 0) + 1
            for task in _LABEL_TASKS:
                if task in tasks:
                    self._process_label(task, input_dict, output)
            gt_object = None
            for task in _MAP_TASKS:
                if task in tasks:
                    gt = self._process_map(task, input_dict, output)
                    gt_object = gt if task == "object" else gt_object
            if "part" in tasks:
                if gt_object is None:
                    gt_object = self._read_gt("object", input_dict, output["object"].shape[-2:])
                self._process_parts(input_dict, output, gt_object)

    def _process_label(self, task: str, input_dict: dict[str, Any], output: dict) -> None:
        scores = output[task]
        if scores.ndim != 1:
            raise ValueError(f"output[{task!r}] must be (K,) scores, got {tuple(scores.shape)}")
        correct = int(_argmax(scores)) == int(self._field(input_dict, task))
        self._counts.top1[task] += np.array([int(correct), 1])

    def _process_map(self, task: str, input_dict: dict[str, Any], output: dict) -> np.ndarray:
        """Add one image's confusion matrix for ``task``; returns its ground truth (H, W)."""
        num_classes = len(self._class_names[task])
        scores = output[task]
        if scores.ndim != 3 or scores.shape[0] != num_classes:
            raise ValueError(
                f"output[{task!r}] must be (K={num_classes}, H, W) scores, got shape "
                f"{tuple(scores.shape)} for {input_dict.get('file_name')}"
            )
        pred = _argmax(scores)
        gt = self._read_gt(task, input_dict, pred.shape)
        gt_bins = np.where(gt == self._ignore_label, num_classes, gt)
        self._counts.conf[task] += _confusion(pred, gt_bins, num_classes + 1)
        return gt

    def _process_parts(self, input_dict: dict[str, Any], output: dict, gt_object: np.ndarray):
        pred_object = _argmax(output["object"])
        part_scores = output["part"]
        gt_part = self._read_gt("part", input_dict, pred_object.shape, objects=gt_object)
        for layout in self._parts:
            pred_in = pred_object == layout.obj
            gt_in = gt_object == layout.obj
            union = pred_in | gt_in
            if not union.any():
                continue
            n = len(layout.part_ids)
            # Predicted side: o's part (argmax over o's slice) inside the predicted o, else "not o".
            pred = np.full(pred_object.shape, n, dtype=np.int64)
            if pred_in.any():
                local_scores = part_scores[list(layout.part_ids)]
                pred[pred_in] = _argmax(local_scores)[pred_in]
            # Ground-truth side: o's part inside the ground-truth o (ignore when unlabelled),
            # "not o" on other labelled objects, ignore where the object is unlabelled.
            lookup = np.full(max(layout.part_ids) + 1, n + 1, dtype=np.int64)
            lookup[list(layout.part_ids)] = np.arange(n)
            in_range = (gt_part >= 0) & (gt_part < len(lookup))
            local_gt = np.where(in_range, lookup[np.where(in_range, gt_part, 0)], n + 1)
            gt = np.where(gt_in, local_gt, np.where(gt_object == self._ignore_label, n + 1, n))
            self._counts.part_conf[layout.obj] += _confusion(pred[union], gt[union], n + 2)

    def _field(self, input_dict: dict[str, Any], key: str) -> Any:
        if key not in input_dict:
            task = key.removesuffix("_file_name")
            raise KeyError(
                f"{input_dict.get('file_name')}: its tasks include {task!r} but the input has "
                f"no {key!r}."
            )
        return input_dict[key]

    def _read_gt(
        self,
        task: str,
        input_dict: dict[str, Any],
        hw: tuple[int, ...],
        objects: np.ndarray | None = None,
    ) -> np.ndarray:
        """Ground truth (H, W) int64 train ids of ``task``, through the project's label reader
        (part ids depend on the object they lie in: ``objects`` is the image's object map)."""
        from ..data import read_multitask_label

        hw = tuple(int(v) for v in hw)
        file_name = self._field(input_dict, f"{task}_file_name")
        kwargs = {"objects": objects} if task == "part" else {}
        gt = read_multitask_label(file_name, self._metadata, task, expected_hw=hw, **kwargs)
        gt = np.asarray(gt, dtype=np.int64)
        if gt.shape != hw:
            raise ValueError(f"Label {file_name} is {gt.shape}, the prediction is {hw}.")
        if task != "part":
            num_classes = len(self._class_names[task])
            bad = (gt != self._ignore_label) & ((gt < 0) | (gt >= num_classes))
            if bad.any():
                raise ValueError(
                    f"{file_name}: {task} label {gt[bad][0]} is neither a class id "
                    f"< {num_classes} nor the ignore label {self._ignore_label}."
                )
        return gt

    def evaluate(self) -> dict[str, dict[str, float]] | None:
        counts = self._counts
        if self._distributed:
            comm.synchronize()
            gathered = comm.all_gather(self._counts)
            if not comm.is_main_process():
                return None
            counts = self._empty_counts()
            for other in gathered:
                counts.add(other)
        results = self._score(counts)
        for task, metrics in results.items():
            headline = ", ".join(f"{k} {v:.2f}" for k, v in metrics.items() if "-" not in k)
            logger.info("Multi-task %s on %s: %s", task, self._dataset_name, headline)
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            with open(os.path.join(self._output_dir, "multitask_evaluation.json"), "w") as f:
                json.dump(results, f, indent=2)
        return results

    def _score(self, counts: _Counts) -> dict[str, dict[str, float]]:
        results: dict[str, dict[str, float]] = {}
        for task in ("scene", "object", "part", "material", "texture"):
            if counts.images.get(task, 0) == 0:
                continue
            if task in _LABEL_TASKS:
                correct, total = counts.top1[task]
                results[task] = {"top1": 100 * float(correct) / float(total)}
                continue
            metrics = self._score_parts(counts) if task == "part" else self._score_map(task, counts)
            if metrics:
                results[task] = metrics
            else:
                logger.warning("No labelled %s pixels in %s; no metrics.", task, self._dataset_name)
        return results

    def _score_map(self, task: str, counts: _Counts) -> dict[str, float]:
        names = self._class_names[task]
        if counts.conf[task][: len(names), : len(names)].sum() == 0:
            return {}
        scored = sem_seg_metrics(counts.conf[task], names)
        ious = {f"IoU-{name}": scored[f"IoU-{name}"] for name in names if f"IoU-{name}" in scored}
        return {"mIoU": scored["mIoU"], "pAcc": scored["pACC"], **ious}

    def _score_parts(self, counts: _Counts) -> dict[str, float]:
        per_object = {}
        for layout in self._parts:
            metrics = part_metrics(counts.part_conf[layout.obj], list(layout.names))
            if metrics:
                per_object[self._object_names[layout.obj]] = metrics
        if not per_object:
            return {}
        results = {
            "mIoU": float(np.mean([m["mIoU"] for m in per_object.values()])),
            "pAcc": float(np.mean([m["pAcc"] for m in per_object.values()])),
        }
        for name, metrics in per_object.items():
            results[f"mIoU-{name}"] = metrics["mIoU"]
        for name, metrics in per_object.items():
            results[f"pAcc-{name}"] = metrics["pAcc"]
        return results
