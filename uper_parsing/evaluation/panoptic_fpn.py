"""The evaluator of ``evaluator_type = "coco_panoptic_seg"`` datasets: PQ, box / mask AP, mIoU."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from .build import register_evaluator
from .coco_evaluation import COCOEvaluator
from .evaluator import DatasetEvaluators
from .panoptic_evaluation import COCOPanopticEvaluator
from .sem_seg_evaluation import SemSegEvaluator

__all__ = ["PanopticFPNEvaluator"]


def _panoptic_semantic_gt(
    metadata: Any, input_dict: Mapping[str, Any], hw: tuple[int, int]
) -> np.ndarray:
    """(H, W) uint8 Panoptic FPN semantic ground truth (0 = things, 1 + s = stuff s, 255), read at
    the dataset dict's ``height`` x ``width`` (``hw``, the prediction's size, is checked by the
    caller)."""
    from ..data.panoptic_utils import read_panoptic_semantic

    return read_panoptic_semantic(input_dict, metadata)


@register_evaluator("coco_panoptic_seg")
class PanopticFPNEvaluator(DatasetEvaluators):
    """Panoptic FPN's three outputs scored side by side.

    Results: ``panoptic_seg`` (:class:`COCOPanopticEvaluator`: PQ / SQ / RQ), ``bbox`` and ``segm``
    (:class:`COCOEvaluator` on ``instances``) and ``sem_seg`` (:class:`SemSegEvaluator` on the
    (K_st + 1, H, W) semantic scores over ``["things", *stuff_classes]``, ground truth from
    :func:`uper_parsing.data.panoptic_utils.read_panoptic_semantic`).
    """

    def __init__(
        self, dataset_name: str, *, output_dir: str | None = None, distributed: bool = True
    ) -> None:
        """
        Args:
            dataset_name: name in ``MetadataCatalog`` (the panoptic metadata contract).
            output_dir: folder of each evaluator's files (``None``: nothing is kept).
            distributed: gather from every process before scoring.
        """
        from ..data import MetadataCatalog

        metadata = MetadataCatalog.get(dataset_name)
        kwargs = {"output_dir": output_dir, "distributed": distributed}
        super().__init__(
            [
                COCOPanopticEvaluator(dataset_name, **kwargs),
                COCOEvaluator(dataset_name, tasks=("bbox", "segm"), **kwargs),
                SemSegEvaluator(
                    dataset_name,
                    class_names=["things", *metadata.stuff_classes],
                    gt_reader=functools.partial(_panoptic_semantic_gt, metadata),
                    **kwargs,
                ),
            ]
        )

    @classmethod
    def from_config(
        cls, cfg: Any, dataset_name: str, output_folder: str | None
    ) -> PanopticFPNEvaluator:
        """The evaluator of ``dataset_name``, writing into ``output_folder``."""
        return cls(dataset_name, output_dir=output_folder)
