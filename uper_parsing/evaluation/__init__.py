from .base import GatheringEvaluator, headline, metrics_table, write_json
from .build import EVALUATOR_REGISTRY, build_evaluator, register_evaluator
from .coco_evaluation import COCOEvaluator
from .confusion import (
    argmax_labels,
    bincount_matrix,
    check_labels,
    confusion_matrix,
    sem_seg_metrics,
)
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
from .sem_seg_evaluation import SemSegEvaluator

__all__ = [
    "COCOEvaluator",
    "COCOPanopticEvaluator",
    "EVALUATOR_REGISTRY",
    "DatasetEvaluator",
    "DatasetEvaluators",
    "GatheringEvaluator",
    "MultiTaskEvaluator",
    "PanopticFPNEvaluator",
    "SemSegEvaluator",
    "argmax_labels",
    "bincount_matrix",
    "build_evaluator",
    "check_labels",
    "confusion_matrix",
    "headline",
    "inference_context",
    "inference_on_dataset",
    "metrics_table",
    "part_metrics",
    "pq_metrics",
    "print_csv_format",
    "register_evaluator",
    "sem_seg_metrics",
    "write_json",
]
