"""The unified-perceptual-parsing family (``evaluator_type "multitask"``): UnifiedPerceptualParser.

Its heads are sized by the datasets' class lists: ``MODEL.MULTITASK.NUM_OBJECTS``,
``OBJECT_PARTS``, ``NUM_MATERIALS``, ``NUM_SCENES``, ``NUM_TEXTURES`` and ``IGNORE_VALUE`` are
filled at set-up from the metadata when unset (0, [], -1) and checked when set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..data.multitask_utils import MODEL_METADATA_KEYS
from ..modeling.meta_arch.unified_parser import unset_class_keys
from .base import TASK_REGISTRY, ModelArg, TaskFamily

__all__ = ["MULTITASK", "draw_multitask_picture", "multitask_model_args", "trainable_tasks"]

_COUNTED = ("material", "scene", "texture")  # tasks whose head is sized by a class count


def draw_multitask_picture(image: np.ndarray, outputs: dict, d: dict, metadata: Any) -> np.ndarray:
    """[image | object | part | material] + scene / texture of a multi-task dataset's image."""
    from ..visualization import Visualizer

    return Visualizer(image, metadata).draw_multitask(outputs, d).get_image()


def multitask_model_args(metadata: Any, where: str, cfg: Any) -> list[ModelArg]:
    """The class counts of the heads ``MODEL.MULTITASK.TASKS`` builds, ``OBJECT_PARTS`` (with
    "part") and the ignore value, from the multi-task metadata."""
    tasks = list(cfg.MODEL.MULTITASK.TASKS)
    objects = metadata.get("object_classes")
    if objects is None:
        return []
    args = [
        ModelArg(
            "MODEL.MULTITASK.NUM_OBJECTS",
            len(objects),
            f"{where} has {len(objects)} object_classes",
            unset=0,
        )
    ]
    if "part" in tasks:
        object_parts = [list(parts) for parts in metadata.object_parts]
        num_parts = sum(len(parts) for parts in object_parts)
        if num_parts != len(metadata.part_classes):
            raise ValueError(
                f"{where}: object_parts owns {num_parts} parts but part_classes has "
                f"{len(metadata.part_classes)}"
            )
        reason = f"{where} has these object_parts (per object, its part ids)"
        args.append(ModelArg("MODEL.MULTITASK.OBJECT_PARTS", object_parts, reason, unset=[]))
    for task in _COUNTED:
        if task in tasks:
            count = len(getattr(metadata, f"{task}_classes"))
            key = f"MODEL.MULTITASK.NUM_{task.upper()}S"
            args.append(ModelArg(key, count, f"{where} has {count} {task}_classes", unset=0))
    ignore = int(metadata.get("ignore_label", 255))
    reason = f"{where} has ignore_label {ignore}"
    args.append(ModelArg("MODEL.MULTITASK.IGNORE_VALUE", ignore, reason, unset=-1))
    return args


def trainable_tasks(cfg: Any) -> set[str]:
    """The tasks the parser of ``cfg`` trains: ``MODEL.MULTITASK.TASKS``, or only "texture" when
    ``MODEL.MULTITASK.TEXTURE_TRAINING`` is "second_phase"."""
    multitask = cfg.MODEL.MULTITASK
    if multitask.TEXTURE_TRAINING == "second_phase":
        return {"texture"}
    return set(multitask.TASKS)


def multitask_train_loader(cfg: Any, mapper: Callable[[dict], dict] | None = None) -> Any:
    """``data.build_multitask_train_loader`` keeping the images that label a task the model
    trains (``trainable_tasks``)."""
    from ..data import build_multitask_train_loader

    return build_multitask_train_loader(cfg, mapper, tasks=trainable_tasks(cfg))


def write_multitask_demo(folder: str, stem: str, outputs: dict, metadata: Any) -> list[str]:
    """Nothing besides the picture ([image | object | part | material] and the scene)."""
    return []


MULTITASK = TASK_REGISTRY.register(
    TaskFamily(
        name="multitask",
        meta_architectures=("UnifiedPerceptualParser",),
        metadata_keys=tuple(k for k in MODEL_METADATA_KEYS if k != "evaluator_type"),
        required_metadata=("object_classes",),
        model_args=multitask_model_args,
        unfilled_keys=unset_class_keys,
        mapper="multitask",
        evaluator="multitask",
        draw=draw_multitask_picture,
        write_demo=write_multitask_demo,
        output_keys=("object", "part", "material", "scene", "texture"),
        train_loader=multitask_train_loader,
    )
)
