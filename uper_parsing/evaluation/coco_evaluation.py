"""COCO box and mask AP of ``output["instances"]`` through pycocotools.

Ground truth comes from ``metadata.instances_json`` when the dataset has one (COCO), else it is
built from the panoptic labels of the evaluated images: each thing segment (crowd included, with
its ``iscrowd``) becomes a COCO annotation with an RLE mask, the mask's tight box and area.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pycocotools.mask as mask_util
import torch

from .base import GatheringEvaluator, Results, headline, metrics_table, write_json
from .panoptic_evaluation import stdout_to_debug_log

__all__ = ["COCOEvaluator", "instances_to_coco_json", "panoptic_to_coco_annotations"]

logger = logging.getLogger(__name__)

_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # COCOeval.stats[0:6]


def _encode(masks: np.ndarray) -> list[dict[str, Any]]:
    """COCO RLEs (``counts`` as str, JSON-ready) of (N, H, W) binary masks."""
    if len(masks) == 0:
        return []
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def panoptic_to_coco_annotations(
    ids: np.ndarray, segments_info: Sequence[Mapping[str, Any]], thing_ids: Mapping[int, int]
) -> list[dict[str, Any]]:
    """COCO instance annotations (without ``id``) of the thing segments of one panoptic label.

    Args:
        ids: (H, W) int64 segment ids (from :func:`uper_parsing.data.panoptic_utils.read_panoptic`).
        segments_info: the dataset dict's segments (``category_id`` contiguous within its group).
        thing_ids: {contiguous thing id: dataset category id}.

    Returns:
        one dict per thing segment with pixels: ``category_id`` (dataset id), ``segmentation``
        (RLE), ``area`` (mask pixels), ``bbox`` (XYWH, tight box of the mask), ``iscrowd``.
    """
    things = [s for s in segments_info if s["isthing"]]
    masks = ids[None] == np.array([int(s["id"]) for s in things], dtype=np.int64)[:, None, None]
    annotations = []
    for segment, rle in zip(things, _encode(masks), strict=True):
        area = int(mask_util.area(rle))
        if area == 0:
            continue
        annotations.append(
            {
                "category_id": thing_ids[int(segment["category_id"])],
                "segmentation": rle,
                "area": area,
                "bbox": [float(v) for v in mask_util.toBbox(rle)],
                "iscrowd": int(segment.get("iscrowd", 0)),
            }
        )
    return annotations


def instances_to_coco_json(
    instances: Mapping[str, torch.Tensor | np.ndarray], image_id: Any, thing_ids: Mapping[int, int]
) -> list[dict[str, Any]]:
    """COCO results of one image's predicted instances.

    Args:
        instances: ``boxes`` (N, 4) XYXY, ``scores`` (N,), ``labels`` (N,) contiguous thing ids
            and optionally ``masks`` (N, H, W) bool.
        image_id: the image's dataset id.
        thing_ids: {contiguous thing id: dataset category id}.

    Returns:
        one dict per instance: ``image_id``, ``category_id`` (dataset id), ``score``, ``bbox``
        (XYWH) and, with masks, ``segmentation`` (RLE).
    """

    def numpy(key: str) -> np.ndarray:
        value = instances[key]
        return value.detach().to("cpu").numpy() if isinstance(value, torch.Tensor) else value

    boxes = numpy("boxes").astype(np.float64).reshape(-1, 4)
    boxes[:, 2:] -= boxes[:, :2]
    scores, labels = numpy("scores"), numpy("labels")
    rles = _encode(numpy("masks")) if "masks" in instances else [None] * len(boxes)
    results = []
    for box, score, label, rle in zip(boxes, scores, labels, rles, strict=True):
        result = {
            "image_id": image_id,
            "category_id": thing_ids[int(label)],
            "bbox": [float(v) for v in box],
            "score": float(score),
        }
        if rle is not None:
            result["segmentation"] = rle
        results.append(result)
    return results


class COCOEvaluator(GatheringEvaluator):
    """COCO AP (``bbox`` and / or ``segm``) of ``output["instances"]``.

    Results, in percent: ``{task: {"AP", "AP50", "AP75", "APs", "APm", "APl", "AP-<class>"}}``;
    as in detectron2, a metric without ground truth (no object of that size or class) is NaN.
    Without any prediction every metric is 0.0 (and a warning is logged).
    """

    results_file = "coco_evaluation.json"

    def __init__(
        self,
        dataset_name: str,
        *,
        tasks: Sequence[str] = ("bbox", "segm"),
        output_dir: str | None = None,
        distributed: bool = True,
    ) -> None:
        """
        Args:
            dataset_name: name in ``MetadataCatalog`` (the panoptic metadata contract, or any
                metadata with ``instances_json`` and ``thing_dataset_id_to_contiguous_id``).
            tasks: subset of ``("bbox", "segm")``.
            output_dir: where ``coco_instances_results.json`` and ``coco_evaluation.json`` are
                written (``None``: nothing is written).
            distributed: gather predictions from every process before scoring.
        """
        unknown = set(tasks) - {"bbox", "segm"}
        if unknown or not tasks:
            raise ValueError(
                f"COCOEvaluator tasks must be a subset of ('bbox', 'segm'), got {tasks}"
            )
        super().__init__(dataset_name, output_dir=output_dir, distributed=distributed)
        self._tasks = tuple(tasks)
        forward = self._metadata.get("thing_dataset_id_to_contiguous_id", None)
        if forward is None:
            raise KeyError(
                f"Metadata of {dataset_name!r} has no 'thing_dataset_id_to_contiguous_id'."
            )
        self._thing_ids = {int(c): int(d) for d, c in forward.items()}
        self._instances_json = self._metadata.get("instances_json", None)
        self._reset_state()

    def _reset_state(self) -> None:
        self._predictions: list[dict[str, Any]] = []  # COCO results of this process
        self._images: list[dict[str, Any]] = []  # {"image": ..., "annotations": [...]}

    def reset(self) -> None:
        self._reset_state()

    def process(self, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
        for input_dict, output in zip(inputs, outputs, strict=True):
            instances = output["instances"]
            if "segm" in self._tasks and "masks" not in instances:
                raise KeyError(
                    f"output['instances'] of {input_dict.get('file_name')} has no 'masks'; "
                    "evaluate with tasks=('bbox',) for a box-only model."
                )
            image_id = input_dict["image_id"]
            self._predictions.extend(instances_to_coco_json(instances, image_id, self._thing_ids))
            image = {"id": image_id, "height": input_dict["height"], "width": input_dict["width"]}
            annotations = None if self._instances_json else self._read_gt(input_dict)
            self._images.append({"image": image, "annotations": annotations})

    def _read_gt(self, input_dict: Mapping[str, Any]) -> list[dict[str, Any]]:
        from ..data.panoptic_utils import read_panoptic

        missing = [k for k in ("pan_seg_file_name", "segments_info") if k not in input_dict]
        if missing:
            raise KeyError(
                f"Input {input_dict.get('file_name')} has no {missing[0]!r}: COCOEvaluator "
                "builds its ground truth from the panoptic fields of the dataset dict."
            )
        ids = read_panoptic(input_dict)
        return panoptic_to_coco_annotations(ids, input_dict["segments_info"], self._thing_ids)

    def local_state(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return self._predictions, self._images

    def merge_states(
        self, states: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        predictions = [p for preds, _ in states for p in preds]
        images = [i for _, imgs in states for i in imgs]
        return predictions, images

    def score(self, state: tuple[list[dict[str, Any]], list[dict[str, Any]]]) -> Results:
        predictions, images = state
        if not images:
            logger.warning("COCOEvaluator on %s saw no images.", self._dataset_name)
            return {}
        if self._output_dir:
            write_json(predictions, self._output_dir, "coco_instances_results.json", indent=None)
        coco_gt = self._coco_gt(images)
        image_ids = [i["image"]["id"] for i in images]
        return {
            task: self._evaluate_task(coco_gt, predictions, image_ids, task) for task in self._tasks
        }

    def _coco_gt(self, images: list[dict[str, Any]]) -> Any:
        """A pycocotools ``COCO`` of the ground truth (loaded, or built from panoptic labels)."""
        from pycocotools.coco import COCO

        with stdout_to_debug_log(logger):
            if self._instances_json:
                return COCO(self._instances_json)
            dataset = {
                "images": [i["image"] for i in images],
                "annotations": [],
                "categories": self._thing_categories(),
            }
            for image in images:
                for ann in image["annotations"]:
                    ann = dict(ann, image_id=image["image"]["id"])
                    ann["id"] = len(dataset["annotations"]) + 1  # COCOeval reads id 0 as "none"
                    dataset["annotations"].append(ann)
            coco_gt = COCO()
            coco_gt.dataset = dataset
            coco_gt.createIndex()
        return coco_gt

    def _thing_categories(self) -> list[dict[str, Any]]:
        """``[{"id", "name"}]`` of the thing categories (dataset ids, from the metadata)."""
        names = list(self._metadata.thing_classes)
        return [{"id": d, "name": str(names[c])} for c, d in sorted(self._thing_ids.items())]

    def _evaluate_task(
        self, coco_gt: Any, predictions: list[dict[str, Any]], image_ids: list[Any], task: str
    ) -> dict[str, float]:
        from pycocotools.cocoeval import COCOeval

        cat_names = {int(c["id"]): str(c["name"]) for c in coco_gt.loadCats(coco_gt.getCatIds())}
        if not predictions:
            logger.warning(
                "COCOEvaluator on %s: no predictions at all; %s metrics are 0.",
                self._dataset_name,
                task,
            )
            return {m: 0.0 for m in _METRICS} | {f"AP-{n}": 0.0 for n in cat_names.values()}
        # One key per task: loadRes computes a box from the mask for segm results without bbox.
        drop = "bbox" if task == "segm" else "segmentation"
        results = [{k: v for k, v in p.items() if k != drop} for p in copy.deepcopy(predictions)]
        with stdout_to_debug_log(logger):
            coco_dt = coco_gt.loadRes(results)
            coco_eval = COCOeval(coco_gt, coco_dt, task)
            coco_eval.params.imgIds = image_ids
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        metrics = {
            name: float(100 * stat) if stat >= 0 else float("nan")
            for name, stat in zip(_METRICS, coco_eval.stats[: len(_METRICS)], strict=True)
        }
        # precision: (iou thresholds, recall, category, area range, max dets); area "all", 100 dets.
        precision = coco_eval.eval["precision"]
        for index, cat_id in enumerate(coco_eval.params.catIds):
            values = precision[:, :, index, 0, -1]
            values = values[values > -1]
            ap = float(100 * np.mean(values)) if values.size else float("nan")
            metrics[f"AP-{cat_names[int(cat_id)]}"] = ap
        return metrics

    def log_results(self, results: Results) -> None:
        for task, metrics in results.items():
            rows = [(key[3:], [value]) for key, value in metrics.items() if key.startswith("AP-")]
            lines = [f"COCO {task} on {self._dataset_name}: {headline(metrics)}"]
            logger.info("\n".join(lines + metrics_table(["AP"], rows)))
