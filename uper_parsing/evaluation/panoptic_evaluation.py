"""Panoptic quality (PQ, SQ, RQ) of ``output["panoptic_seg"]`` through panopticapi.

Predictions are turned into COCO-panoptic PNGs and annotations with dataset category ids, gathered
on the main process, written to a folder and matched against the dataset's ``panoptic_json`` by
panopticapi's own per-image matching (:func:`panopticapi.evaluation.pq_compute_single_core`),
run over a bounded fork pool by :func:`pq_stat_of_matches`.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from .base import GatheringEvaluator, Results, metrics_table, write_json

__all__ = [
    "COCOPanopticEvaluator",
    "contiguous_to_dataset_ids",
    "pq_metrics",
    "pq_stat_of_matches",
]

logger = logging.getLogger(__name__)

_GROUPS = (("", None), ("_th", True), ("_st", False))  # key suffix, isthing filter
_PQ_SQ_RQ = ("PQ", "SQ", "RQ")


def contiguous_to_dataset_ids(metadata: Any) -> tuple[dict[int, int], dict[int, int]]:
    """Invert the metadata's id maps.

    Returns:
        ``(things, stuff)``: {contiguous thing id: dataset id}, {contiguous stuff id: dataset id}.
    """
    maps = []
    for key in ("thing_dataset_id_to_contiguous_id", "stuff_dataset_id_to_contiguous_id"):
        forward = metadata.get(key, None)
        if forward is None:
            raise KeyError(f"Metadata of dataset {metadata.name!r} has no {key!r}.")
        maps.append({int(c): int(d) for d, c in forward.items()})
    return maps[0], maps[1]


@contextlib.contextmanager
def stdout_to_debug_log(log: logging.Logger) -> Iterator[None]:
    """Capture ``print`` output of the block (panopticapi, pycocotools) into ``log.debug``."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        text = buffer.getvalue().strip()
        if text:
            log.debug("%s", text)


def _to_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu").numpy()
    return np.asarray(x)


def _png_bytes(ids: np.ndarray) -> bytes:
    """PNG (RGB, ``id = R + 256 G + 256^2 B``) of an (H, W) int segment id map."""
    from ..data.panoptic_utils import id2rgb

    buffer = io.BytesIO()
    Image.fromarray(id2rgb(ids)).save(buffer, format="PNG")
    return buffer.getvalue()


def pq_metrics(pq_stat: Any, categories: Mapping[int, Mapping[str, Any]]) -> dict[str, float]:
    """PQ / SQ / RQ in percent from panopticapi's accumulated ``PQStat``.

    Args:
        pq_stat: ``panopticapi.evaluation.PQStat`` summed over the images.
        categories: {dataset id: ``{"name", "isthing"}``}, every category of the dataset.

    Returns:
        ``PQ``, ``SQ``, ``RQ`` over the categories with at least one true positive, false
        positive or false negative (panopticapi's average), ``PQ_th`` / ``SQ_th`` / ``RQ_th`` and
        ``PQ_st`` / ``SQ_st`` / ``RQ_st`` over things / stuff, and ``PQ-<name>``, ``SQ-<name>``,
        ``RQ-<name>`` per category. A group or category without any segment (ground truth or
        prediction) is undefined and left out (panopticapi divides by zero there).
    """
    counts = {cat: stat.tp + stat.fp + stat.fn for cat, stat in pq_stat.pq_per_cat.items()}
    results: dict[str, float] = {}
    per_class: dict[int, dict[str, float]] = {}
    for suffix, isthing in _GROUPS:
        group = {
            cat: info
            for cat, info in categories.items()
            if isthing is None or bool(info["isthing"]) == isthing
        }
        if not any(counts.get(cat, 0) > 0 for cat in group):
            continue
        average, classes = pq_stat.pq_average(group, isthing=None)
        for metric in ("pq", "sq", "rq"):
            results[f"{metric.upper()}{suffix}"] = 100 * float(average[metric])
        if isthing is None:
            per_class = classes
    for cat, info in categories.items():
        if counts.get(cat, 0) > 0:
            for metric in ("pq", "sq", "rq"):
                results[f"{metric.upper()}-{info['name']}"] = 100 * float(per_class[cat][metric])
    return results


def pq_stat_of_matches(
    matched: Sequence[tuple[dict, dict]],
    gt_folder: str,
    pred_folder: str,
    categories: Mapping[int, dict],
    *,
    max_workers: int = 8,
) -> Any:
    """panopticapi's ``PQStat`` over (ground truth, prediction) annotation pairs.

    The per-image work is panopticapi's ``pq_compute_single_core``; unlike its
    ``pq_compute_multi_core`` (a pool of every core, whose workers print progress past any
    redirection when the start method is not fork, as under ``launch``'s spawned processes),
    the pool here is forked, so its prints stay captured, and holds at most ``max_workers``
    processes (never more than there are images; none for a single chunk).
    """
    import multiprocessing

    from panopticapi.evaluation import PQStat, pq_compute_single_core

    workers = max(1, min(len(matched), os.cpu_count() or 1, max_workers))
    chunks = [list(c) for c in np.array_split(np.arange(len(matched)), workers) if len(c)]
    jobs = [
        (i, [matched[j] for j in chunk], gt_folder, pred_folder, categories)
        for i, chunk in enumerate(chunks)
    ]
    total = PQStat()
    if len(jobs) <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        for job in jobs:
            total += pq_compute_single_core(*job)
        return total
    with multiprocessing.get_context("fork").Pool(len(jobs)) as pool:
        for stat in pool.starmap(pq_compute_single_core, jobs):
            total += stat
    return total


class COCOPanopticEvaluator(GatheringEvaluator):
    """PQ, SQ and RQ (all, things, stuff, per class) of ``output["panoptic_seg"]``.

    Each output's ``panoptic_seg = (seg_map (H, W) int, segments_info)`` (segment ids >= 1,
    ``category_id`` contiguous within its group, ``isthing``) becomes a PNG named after the
    input's ``file_name`` stem and an annotation with dataset category ids. Ground truth is
    ``metadata.panoptic_json`` restricted to the evaluated images, with PNGs in
    ``metadata.panoptic_root``. Results: ``{"panoptic_seg": {"PQ", "SQ", "RQ", "PQ_th", ...,
    "PQ-<name>", ...}}`` in percent (see :func:`pq_metrics`).
    """

    results_file = "panoptic_evaluation.json"

    def __init__(
        self, dataset_name: str, *, output_dir: str | None = None, distributed: bool = True
    ) -> None:
        """
        Args:
            dataset_name: name in ``MetadataCatalog`` (the panoptic metadata contract).
            output_dir: where ``panoptic_evaluation.json`` and the predictions
                (``panoptic_predictions/`` and ``panoptic_predictions.json``) are written;
                ``None``: predictions go to a temporary folder and nothing is kept.
            distributed: gather predictions from every process before scoring.
        """
        super().__init__(dataset_name, output_dir=output_dir, distributed=distributed)
        self._thing_ids, self._stuff_ids = contiguous_to_dataset_ids(self._metadata)
        self._predictions: list[dict[str, Any]] = []

    def reset(self) -> None:
        self._predictions = []

    def process(self, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
        for input_dict, output in zip(inputs, outputs, strict=True):
            seg_map, segments_info = output["panoptic_seg"]
            ids = _to_numpy(seg_map).astype(np.int64)
            self._predictions.append(
                {
                    "image_id": input_dict["image_id"],
                    "segments_info": self._segments(ids, segments_info, input_dict["file_name"]),
                    "png": _png_bytes(ids),
                }
            )

    def _segments(
        self, ids: np.ndarray, segments_info: Sequence[Mapping[str, Any]], image: str
    ) -> list[dict[str, int]]:
        """Segments of one prediction with dataset category ids; segments without pixels are
        left out (panopticapi rejects them), pixels of unlisted segments are an error."""
        present = set(np.unique(ids).tolist()) - {0}
        listed = {int(s["id"]) for s in segments_info}
        unlisted = sorted(present - listed)
        if unlisted:
            raise ValueError(
                f"panoptic_seg of {image}: segment id {unlisted[0]} is in the segment map but "
                "not in its segments_info."
            )
        segments = []
        for s in segments_info:
            if int(s["id"]) not in present:
                continue
            isthing = bool(s["isthing"])
            contiguous = int(s["category_id"])
            id_map = self._thing_ids if isthing else self._stuff_ids
            if contiguous not in id_map:
                raise ValueError(
                    f"panoptic_seg of {image}: segment {s['id']} has category_id {contiguous} "
                    f"(isthing={isthing}); expected a contiguous id in 0..{len(id_map) - 1}."
                )
            segments.append(
                {"id": int(s["id"]), "category_id": id_map[contiguous], "isthing": int(isthing)}
            )
        return segments

    def local_state(self) -> list[dict[str, Any]]:
        return self._predictions  # PNG bytes: gathered on the main process only

    def merge_states(self, states: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        return [prediction for state in states for prediction in state]

    def score(self, state: list[dict[str, Any]]) -> Results:
        if not state:
            logger.warning("COCOPanopticEvaluator on %s got no predictions.", self._dataset_name)
            return {}
        with contextlib.ExitStack() as stack:
            if self._output_dir:
                work_dir = self._output_dir
            else:
                work_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="panoptic_"))
            return {"panoptic_seg": self._pq_metrics(state, work_dir)}

    def _pq_metrics(self, predictions: list[dict[str, Any]], work_dir: str) -> dict[str, float]:
        """Write predictions and the restricted ground truth under ``work_dir`` and score them."""
        gt_json = self._load_gt_json()
        pred_folder = os.path.join(work_dir, "panoptic_predictions")
        os.makedirs(pred_folder, exist_ok=True)
        annotations = [{k: v for k, v in pred.items() if k != "png"} for pred in predictions]
        pred_by_image = {a["image_id"]: a for a in annotations}
        if len(pred_by_image) != len(annotations):
            raise ValueError(
                f"COCOPanopticEvaluator on {self._dataset_name}: an image id was predicted more "
                "than once (is the evaluation sampler repeating images?)."
            )
        gt_by_image = {a["image_id"]: a for a in gt_json["annotations"]}
        missing = [i for i in pred_by_image if i not in gt_by_image]
        if missing:
            raise KeyError(
                f"Image id {missing[0]!r} has a prediction but no annotation in "
                f"{self._metadata.panoptic_json}."
            )
        # a prediction PNG takes the name of its ground-truth PNG: unique, where image stems may
        # not be (x/a.jpg and y/a.jpg would overwrite each other)
        names = Counter(gt_by_image[i]["file_name"] for i in pred_by_image)
        shared = [name for name, count in names.items() if count > 1]
        if shared:
            raise ValueError(
                f"{self._metadata.panoptic_json}: {names[shared[0]]} annotations have file_name "
                f"{shared[0]!r}; expected one PNG per image."
            )
        for pred, annotation in zip(predictions, annotations, strict=True):
            annotation["file_name"] = gt_by_image[annotation["image_id"]]["file_name"]
            with open(os.path.join(pred_folder, annotation["file_name"]), "wb") as f:
                f.write(pred["png"])
        evaluated = set(pred_by_image)
        if len(evaluated) < len(gt_by_image):
            logger.warning(
                "%s: %d of the %d annotated images were predicted; PQ covers those only.",
                self._dataset_name,
                len(evaluated),
                len(gt_by_image),
            )
        categories_json = gt_json["categories"]
        predicted = {"annotations": annotations, "categories": categories_json}
        write_json(predicted, work_dir, "panoptic_predictions.json", indent=None)
        restricted = {
            "images": [i for i in gt_json.get("images", []) if i["id"] in evaluated],
            "annotations": [gt_by_image[i] for i in pred_by_image],
            "categories": categories_json,
        }
        write_json(restricted, work_dir, "panoptic_gt.json", indent=None)
        categories = {int(c["id"]): c for c in gt_json["categories"]}
        matched = [(gt_by_image[i], pred_by_image[i]) for i in pred_by_image]
        with stdout_to_debug_log(logger):
            pq_stat = pq_stat_of_matches(
                matched, self._metadata.panoptic_root, pred_folder, categories
            )
        return pq_metrics(pq_stat, categories)

    def _load_gt_json(self) -> dict[str, Any]:
        path = self._metadata.get("panoptic_json", None)
        if path is None or self._metadata.get("panoptic_root", None) is None:
            raise KeyError(
                f"Metadata of {self._dataset_name!r} needs panoptic_json and panoptic_root for "
                "COCOPanopticEvaluator."
            )
        with open(path) as f:
            return json.load(f)

    def log_results(self, results: Results) -> None:
        metrics = results["panoptic_seg"]
        groups = [
            (label, [metrics[f"{m}{suffix}"] for m in _PQ_SQ_RQ])
            for suffix, label in (("", "All"), ("_th", "Things"), ("_st", "Stuff"))
            if f"PQ{suffix}" in metrics
        ]
        classes = [
            (key[3:], [metrics[f"{m}-{key[3:]}"] for m in _PQ_SQ_RQ])
            for key in metrics
            if key.startswith("PQ-")
        ]
        lines = [f"Panoptic segmentation on {self._dataset_name}:"]
        lines += metrics_table(_PQ_SQ_RQ, groups, label="", label_width=10)
        lines += metrics_table(_PQ_SQ_RQ, classes)
        logger.info("\n".join(lines))
