"""Unified perceptual parsing metrics (UPerNet paper): scene, object, part, material, texture.

Each task is scored only over the images whose ``tasks`` include it, under two protocols reported
side by side (see :class:`MultiTaskEvaluator` for both, exactly):

- ``<task>``: the reference protocol of CSAIL's unifiedparsing (``eval_multipro.py``
  ``get_metrics`` / ``get_benchmark_result``, ``utils.py`` ``intersectionAndUnion`` /
  ``intersection_union_part``, ``broden_dataset_utils/joint_dataset.py`` ``valid_part``): mIoU
  averages over every class (an empty union scores 0), parts are scored with their object's "-"
  part as background, only in the images where the object carries a real part.
- ``<task>_ours``: this project's earlier protocol: :func:`sem_seg_metrics` per class (classes
  absent on both sides left out), parts scored against a "not this object" bin with the "-" part
  ignored.

Scene and texture give top-1 accuracy, the same under both (CSAIL has no texture evaluation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .base import GatheringEvaluator, Results, headline
from .build import register_evaluator
from .confusion import (
    argmax_labels,
    bincount_matrix,
    check_labels,
    confusion_matrix,
    sem_seg_metrics,
)

__all__ = ["MultiTaskEvaluator", "part_metrics", "reference_map_metrics", "reference_part_metrics"]

logger = logging.getLogger(__name__)

_TASKS = ("scene", "object", "part", "material", "texture")
_MAP_TASKS = ("object", "material")
_LABEL_TASKS = ("scene", "texture")
OURS_SUFFIX = "_ours"


@dataclass
class _Counts:
    """Everything one process accumulates; summed over processes before scoring.

    ``conf``: per map task (object / material) a (K+1, K+1) ``[pred, gt]`` matrix, the last
    row / column the ignore bin (both protocols read it). ``part_conf`` (ours): per object with
    parts a (n+2, n+2) ``[pred, gt]`` matrix over its n real parts, then the "not this object"
    bin, then the ignore bin. ``reference_part_conf``: per object with parts an (n+1, n+1)
    ``[pred, gt]`` matrix of local part indices (0 = "-" or outside the object) over the images
    where the object is valid. ``top1``: per label task (scene / texture) [correct, total].
    ``images``: per task, images scored.
    """

    conf: dict[str, np.ndarray]
    part_conf: dict[int, np.ndarray]
    reference_part_conf: dict[int, np.ndarray]
    top1: dict[str, np.ndarray]
    images: dict[str, int] = field(default_factory=dict)

    def add(self, other: _Counts) -> None:
        for task, matrix in other.conf.items():
            self.conf[task] += matrix
        for obj, matrix in other.part_conf.items():
            self.part_conf[obj] += matrix
        for obj, matrix in other.reference_part_conf.items():
            self.reference_part_conf[obj] += matrix
        for task, counts in other.top1.items():
            self.top1[task] += counts
        for task, count in other.images.items():
            self.images[task] = self.images.get(task, 0) + count


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise quotient, 0 where the denominator is 0: CSAIL's ``x / (y + 1e-8)`` on
    counts, without the epsilon's relative shift of at most 1e-8."""
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    out = np.zeros(np.broadcast(numerator, denominator).shape)
    return np.divide(numerator, denominator, out=out, where=denominator > 0)


def part_metrics(conf_matrix: np.ndarray, part_names: list[str]) -> dict[str, float]:
    """Part metrics within one object under our protocol, in percent, from its (n+2, n+2)
    ``[pred, gt]`` matrix.

    Rows / columns 0..n-1 are the object's real parts, n is "not this object", n+1 the ignore bin.
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


def reference_map_metrics(conf_matrix: np.ndarray, class_names: list[str]) -> dict[str, float]:
    """Object / material metrics under CSAIL's protocol, in percent.

    Args:
        conf_matrix: (K+1, K+1) ``[pred, gt]`` counts, the last column ground-truth unlabelled
            (left out: predictions there are not counted).
        class_names: the K class names.

    Returns:
        ``mIoU`` (mean over all K classes of intersection / union, 0 for an empty union),
        ``pAcc`` (right labelled pixels / labelled pixels) and ``IoU-<cls>`` for every class;
        ``{}`` when no pixel is labelled.
    """
    k = len(class_names)
    labelled = conf_matrix[:k, :k].astype(np.int64)
    inter = np.diag(labelled)
    if labelled.sum() == 0:
        return {}
    ious = 100 * _ratio(inter, labelled.sum(axis=0) + labelled.sum(axis=1) - inter)
    return {
        "mIoU": float(ious.mean()),
        "pAcc": 100 * float(inter.sum() / labelled.sum()),
        **{f"IoU-{name}": float(iou) for name, iou in zip(class_names, ious, strict=True)},
    }


def reference_part_metrics(conf_matrix: np.ndarray, part_names: list[str]) -> dict[str, float]:
    """Part metrics within one object under CSAIL's protocol, in percent.

    Args:
        conf_matrix: (n+1, n+1) ``[pred, gt]`` counts of local part indices over the object's
            valid images: 0 is "-" (or outside the object), 1..n the real parts.
        part_names: the n real part names.

    Returns:
        ``mIoU`` (mean over the n real parts of intersection / union, 0 for an empty union),
        ``pAcc`` (right real-part pixels / ground-truth real-part pixels) and ``IoU-<part>``;
        ``{}`` when there is no ground-truth real-part pixel (CSAIL's ``part_pixel_cnt == 0``).
    """
    inter = np.diag(conf_matrix)[1:]
    gt_area = conf_matrix.sum(axis=0)[1:]
    if gt_area.sum() == 0:
        return {}
    ious = 100 * _ratio(inter, gt_area + conf_matrix.sum(axis=1)[1:] - inter)
    return {
        "mIoU": float(ious.mean()),
        "pAcc": 100 * float(inter.sum() / gt_area.sum()),
        **{f"IoU-{name}": float(iou) for name, iou in zip(part_names, ious, strict=True)},
    }


def _average_over_objects(per_object: dict[str, dict[str, float]]) -> dict[str, float]:
    """``part`` results: mIoU / pAcc averaged over objects, then ``mIoU-<object>``,
    ``pAcc-<object>``."""
    if not per_object:
        return {}
    results = {
        "mIoU": float(np.mean([m["mIoU"] for m in per_object.values()])),
        "pAcc": float(np.mean([m["pAcc"] for m in per_object.values()])),
    }
    results.update({f"mIoU-{name}": m["mIoU"] for name, m in per_object.items()})
    results.update({f"pAcc-{name}": m["pAcc"] for name, m in per_object.items()})
    return results


@dataclass(frozen=True)
class _PartLayout:
    """Object ``obj`` owns global part ids ``part_ids`` (its slice of the part scores; the first
    is its "-" part); ``names`` are its real parts'. ``local[g]`` is the index of global part id
    g within ``part_ids`` (-1: not one of o's)."""

    obj: int
    part_ids: tuple[int, ...]
    names: tuple[str, ...]
    local: np.ndarray = field(compare=False, repr=False)

    def local_parts(self, gt_part: np.ndarray) -> np.ndarray:
        """(H, W) index of each pixel's global part id within ``part_ids``, -1 where none."""
        in_range = (gt_part >= 0) & (gt_part < len(self.local))
        return np.where(in_range, self.local[np.where(in_range, gt_part, 0)], -1)


def _part_layouts(meta: Any) -> list[_PartLayout]:
    """One layout per object with real parts; checks that each object's first part is "-"."""
    part_classes = [str(c) for c in meta.part_classes]
    layouts = []
    for obj, ids in enumerate(meta.object_parts):
        if len(ids) == 0:
            continue
        if not part_classes[ids[0]].endswith("/-"):
            raise ValueError(
                f"object_parts[{obj}] starts with part {ids[0]} '{part_classes[ids[0]]}', not the "
                "object's background part '<object>/-': the metadata predates the '-' parts"
            )
        if len(ids) == 1:
            continue
        local = np.full(len(part_classes), -1, dtype=np.int64)
        local[list(ids)] = np.arange(len(ids))
        names = tuple(part_classes[i] for i in ids[1:])
        layouts.append(_PartLayout(obj, tuple(int(i) for i in ids), names, local))
    return layouts


@register_evaluator("multitask")
class MultiTaskEvaluator(GatheringEvaluator):
    """Scene, object, part, material and texture metrics of a unified perceptual parser, under
    CSAIL's reference protocol and under ours.

    Inputs carry ``tasks`` and, per labelled task, the dataset-dict fields ``object_file_name``,
    ``part_file_name``, ``material_file_name`` (read at the original size through
    :func:`uper_parsing.data.read_multitask_label`), ``scene`` and ``texture`` (ints). Outputs are
    the model's per-image dicts: ``object`` (K_obj, H, W), ``part`` (P, H, W), ``material``
    (K_mat, H, W), ``scene`` (K_scene,), ``texture`` (K_tex,) scores. Each object o with parts
    owns the part scores ``object_parts[o]``: first its "-" (no part) part, then its real parts.

    Reference protocol (CSAIL unifiedparsing, ``eval_multipro.py``), keys ``<task>``:

    - object / material: predictions on pixels whose ground truth is unlabelled are not counted.
      Per class, intersection and union are summed over the images; mIoU is the mean over *all*
      classes of intersection / union, a class with an empty union scoring 0; pAcc is right
      labelled pixels / labelled pixels.
    - part, per object o with parts: an image counts for o only when o is valid in it (CSAIL's
      ``valid_part``: some ground-truth pixel of o carries a real part of o). There the
      ground-truth local part map is o's part index (0 for "-", also for an ignore or foreign
      part id inside o) inside the ground-truth o, 0 elsewhere; the predicted one is the argmax
      over o's whole slice (with "-") inside the predicted o (argmax of ``object``), 0 elsewhere.
      Per real part: intersection = pixels where both maps give it, union = predicted + ground
      truth area - intersection, summed over o's valid images. o's mIoU is the mean over its real
      parts (empty union: 0), its pAcc right / all ground-truth real-part pixels; ``part`` mIoU /
      pAcc average these over the objects that were valid in some image.

    Our protocol, keys ``<task>_ours``:

    - object / material: :func:`sem_seg_metrics` of the confusion matrix (unlabelled ground truth
      left out; a class absent from both prediction and ground truth is left out of mIoU).
    - part, per object o with parts and every image labelled for parts: a pixel is predicted as
      real part p of o when the predicted object is o and p is the argmax over o's *real* parts;
      it is ground-truth part p of o when the ground-truth object is o and its part is p. Pixels
      where only one side says o go against a "not o" bin: ground truth o / predicted elsewhere is
      a miss of the ground-truth part, predicted o / ground truth another object is a false
      positive of the predicted part. Ground-truth o with the "-" part (or an ignore / foreign
      part id), and ground-truth object unlabelled, are ignored. Per object: IoU per real part
      (the :func:`sem_seg_metrics` convention), mIoU over them, pixel accuracy over its
      ground-truth real-part pixels (:func:`part_metrics`); ``part`` mIoU / pAcc average these
      over the objects with ground-truth real-part pixels.

    Scene / texture: top-1 over the images labelled for them, under both keys.

    Results, in percent, with tasks that have no labelled images left out; ``<task>_ours`` follows
    each ``<task>`` with the same metric names::

        {"scene": {"top1"}, "object": {"mIoU", "pAcc", "IoU-<cls>", ...},
         "part": {"mIoU", "pAcc", "mIoU-<object>", "pAcc-<object>", ...},
         "material": {"mIoU", "pAcc", "IoU-<cls>", ...}, "texture": {"top1"},
         "scene_ours": ..., "object_ours": ..., ...}
    """

    results_file = "multitask_evaluation.json"

    def __init__(
        self, dataset_name: str, *, distributed: bool = True, output_dir: str | None = None
    ) -> None:
        """
        Args:
            dataset_name: name in ``MetadataCatalog`` (the multi-task metadata contract).
            distributed: gather counts from every process before computing metrics.
            output_dir: where ``multitask_evaluation.json`` is written (``None``: nothing).

        Raises:
            ValueError: an object's first part is not its "-" part.
        """
        super().__init__(dataset_name, output_dir=output_dir, distributed=distributed)
        meta = self._metadata
        self._ignore_label = getattr(meta, "ignore_label", 255)
        self._class_names = {
            "object": [str(c) for c in meta.object_classes],
            "material": [str(c) for c in meta.material_classes],
        }
        self._object_names = self._class_names["object"]
        self._parts = _part_layouts(meta)
        self._counts = self._empty_counts()

    def _empty_counts(self) -> _Counts:
        return _Counts(
            conf={
                task: np.zeros((len(names) + 1,) * 2, dtype=np.int64)
                for task, names in self._class_names.items()
            },
            part_conf={
                layout.obj: np.zeros((len(layout.names) + 2,) * 2, dtype=np.int64)
                for layout in self._parts
            },
            reference_part_conf={
                layout.obj: np.zeros((len(layout.part_ids),) * 2, dtype=np.int64)
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
        correct = int(argmax_labels(scores)) == int(self._field(input_dict, task))
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
        pred = argmax_labels(scores)
        gt = self._read_gt(task, input_dict, pred.shape)
        source = f"{input_dict[f'{task}_file_name']} ({task})"
        self._counts.conf[task] += confusion_matrix(
            pred, gt, num_classes, self._ignore_label, source
        )
        return gt

    def _process_parts(self, input_dict: dict[str, Any], output: dict, gt_object: np.ndarray):
        pred_object = argmax_labels(output["object"])
        gt_part = self._read_gt("part", input_dict, pred_object.shape, objects=gt_object)
        gt_unlabelled = gt_object == self._ignore_label
        for layout in self._parts:
            pred_in = pred_object == layout.obj
            gt_in = gt_object == layout.obj
            union = pred_in | gt_in
            if not union.any():
                continue
            # o's part index inside the ground-truth o (0 = "-", also for ignore / foreign ids).
            gt_local = np.where(gt_in, np.maximum(layout.local_parts(gt_part), 0), 0)
            self._add_reference_parts(layout, output["part"], pred_in, gt_local)
            self._add_our_parts(layout, output["part"], pred_in, gt_local, gt_in, gt_unlabelled)

    def _add_reference_parts(
        self,
        layout: _PartLayout,
        part_scores: torch.Tensor | np.ndarray,
        pred_in: np.ndarray,
        gt_local: np.ndarray,
    ) -> None:
        """CSAIL: only where o is valid; argmax over o's whole slice inside the predicted o."""
        gt_real = gt_local > 0
        if not gt_real.any():
            return
        union = pred_in | gt_real  # elsewhere both maps are 0, which no score reads
        pred = np.zeros_like(gt_local)
        if pred_in.any():
            pred[pred_in] = argmax_labels(part_scores[list(layout.part_ids)])[pred_in]
        n = len(layout.part_ids)
        self._counts.reference_part_conf[layout.obj] += bincount_matrix(
            pred[union], gt_local[union], n
        )

    def _add_our_parts(
        self,
        layout: _PartLayout,
        part_scores: torch.Tensor | np.ndarray,
        pred_in: np.ndarray,
        gt_local: np.ndarray,
        gt_in: np.ndarray,
        gt_unlabelled: np.ndarray,
    ) -> None:
        """Ours: real parts only, against "not o" (bin n) and ignore (bin n + 1) bins."""
        n = len(layout.names)
        union = pred_in | gt_in
        pred = np.full(pred_in.shape, n, dtype=np.int64)
        if pred_in.any():
            pred[pred_in] = argmax_labels(part_scores[list(layout.part_ids[1:])])[pred_in]
        inside = np.where(gt_local > 0, gt_local - 1, n + 1)  # "-" inside o is ignored
        gt = np.where(gt_in, inside, np.where(gt_unlabelled, n + 1, n))
        self._counts.part_conf[layout.obj] += bincount_matrix(pred[union], gt[union], n + 2)

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
            check_labels(gt, num_classes, self._ignore_label, f"{file_name} ({task})")
        return gt

    def local_state(self) -> _Counts:
        return self._counts

    def merge_states(self, states: list[_Counts]) -> _Counts:
        counts = self._empty_counts()
        for other in states:
            counts.add(other)
        return counts

    def log_results(self, results: Results) -> None:
        for key, metrics in results.items():
            protocol = "ours" if key.endswith(OURS_SUFFIX) else "CSAIL reference protocol"
            logger.info(
                "Multi-task %s (%s) on %s: %s", key, protocol, self._dataset_name, headline(metrics)
            )

    def score(self, counts: _Counts) -> Results:
        if not any(counts.images.values()):
            logger.warning("MultiTaskEvaluator on %s saw no labelled image.", self._dataset_name)
            return {}
        results: dict[str, dict[str, float]] = {}
        for task in _TASKS:
            if counts.images.get(task, 0) == 0:
                continue
            if task in _LABEL_TASKS:
                correct, total = counts.top1[task]
                top1 = {"top1": 100 * float(correct) / float(total)}
                results[task], results[task + OURS_SUFFIX] = top1, dict(top1)
                continue
            for key, metrics in (
                (task, self._score_reference(task, counts)),
                (task + OURS_SUFFIX, self._score_ours(task, counts)),
            ):
                if metrics:
                    results[key] = metrics
                else:
                    logger.warning(
                        "No labelled %s pixels in %s; no metrics.", key, self._dataset_name
                    )
        return results

    def _score_reference(self, task: str, counts: _Counts) -> dict[str, float]:
        if task != "part":
            return reference_map_metrics(counts.conf[task], self._class_names[task])
        per_object = {}
        for layout in self._parts:
            conf = counts.reference_part_conf[layout.obj]
            metrics = reference_part_metrics(conf, list(layout.names))
            if metrics:
                per_object[self._object_names[layout.obj]] = metrics
        return _average_over_objects(per_object)

    def _score_ours(self, task: str, counts: _Counts) -> dict[str, float]:
        if task != "part":
            names = self._class_names[task]
            if counts.conf[task][: len(names), : len(names)].sum() == 0:
                return {}
            scored = sem_seg_metrics(counts.conf[task], names)
            ious = {f"IoU-{n}": scored[f"IoU-{n}"] for n in names if f"IoU-{n}" in scored}
            return {"mIoU": scored["mIoU"], "pAcc": scored["pACC"], **ious}
        per_object = {}
        for layout in self._parts:
            metrics = part_metrics(counts.part_conf[layout.obj], list(layout.names))
            if metrics:
                per_object[self._object_names[layout.obj]] = metrics
        return _average_over_objects(per_object)
