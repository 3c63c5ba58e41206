from .build import EVALUATOR_REGISTRY, build_evaluator, register_evaluator
from .coco_evaluation import COCOEvaluator
from .evaluator import (
    DatasetEvaluator,
    DatasetEvaluators,
    inference_context,
    inference_on_dataset,
    print_csv_format,
)
from .multitask_evaluation import MultiTaskEvaluator, part_metrics
from .panoptic_evaluation import COCOPanopticEvaluator, pq_metrics
from .panoptic_fpn import PanopticFPNEvaluator
from .sem_seg_evaluation import SemSegEvaluator, sem_seg_metrics

__all__ = [
    "COCOEvaluator",
    "COCOPanopticEvaluator",
    "EVALUATOR_REGISTRY",
    "DatasetEvaluator",
    "DatasetEvaluators",
    "MultiTaskEvaluator",
    "PanopticFPNEvaluator",
    "SemSegEvaluator",
    "build_evaluator",
    "inference_context",
    "inference_on_dataset",
    "part_metrics",
    "pq_metrics",
    "print_csv_format",
    "register_evaluator",
    "sem_seg_metrics",
]
