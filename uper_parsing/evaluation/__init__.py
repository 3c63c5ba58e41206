from .build import EVALUATOR_REGISTRY, build_evaluator, register_evaluator
from .evaluator import (
    DatasetEvaluator,
    DatasetEvaluators,
    inference_context,
    inference_on_dataset,
    print_csv_format,
)
from .sem_seg_evaluation import SemSegEvaluator, sem_seg_metrics

__all__ = [
    "EVALUATOR_REGISTRY",
    "DatasetEvaluator",
    "DatasetEvaluators",
    "SemSegEvaluator",
    "build_evaluator",
    "inference_context",
    "inference_on_dataset",
    "print_csv_format",
    "register_evaluator",
    "sem_seg_metrics",
]
