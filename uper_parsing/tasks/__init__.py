"""Task records: one ``TaskFamily`` per task family, registered in ``TASK_REGISTRY`` under its
``evaluator_type`` (importing this package registers the builtin ones: sem_seg, panoptic,
multitask). See docs/ARCHITECTURE.md, "Task records"."""

from .base import TASK_REGISTRY, ModelArg, TaskFamily, TaskRegistry
from .multitask import MULTITASK
from .panoptic import PANOPTIC
from .sem_seg import SEM_SEG
from .setup import (
    configure_model,
    family_of_outputs,
    find_family,
    find_metadata,
    metadata_label,
    registered_metadata,
    stored_metadata,
)

__all__ = [
    "MULTITASK",
    "PANOPTIC",
    "SEM_SEG",
    "TASK_REGISTRY",
    "ModelArg",
    "TaskFamily",
    "TaskRegistry",
    "configure_model",
    "family_of_outputs",
    "find_family",
    "find_metadata",
    "metadata_label",
    "registered_metadata",
    "stored_metadata",
]
