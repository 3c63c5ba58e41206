"""The semantic-segmentation family (``evaluator_type "sem_seg"``): UPerNet, PSPNet, FPN."""

from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np

from .base import TASK_REGISTRY, ModelArg, TaskFamily

__all__ = ["SEM_SEG", "draw_sem_seg_picture", "sem_seg_model_args", "write_sem_seg_demo"]


def draw_sem_seg_picture(image: np.ndarray, outputs: dict, d: dict, metadata: Any) -> np.ndarray:
    """[image | prediction | ground truth] of a semantic dataset's image; the ground truth is the
    dict's label file, left out when the dict has no ``sem_seg_file_name``."""
    from ..visualization import Visualizer

    prediction = outputs["sem_seg"].argmax(dim=0)
    return Visualizer(image, metadata).draw_sem_seg_prediction(prediction, d).get_image()


def sem_seg_model_args(metadata: Any, where: str, cfg: Any) -> list[ModelArg]:
    """``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` = the number of ``stuff_classes``."""
    classes = metadata.get("stuff_classes")
    if classes is None:
        return []
    reason = f"{where} has {len(classes)} classes (metadata stuff_classes)"
    return [ModelArg("MODEL.SEM_SEG_HEAD.NUM_CLASSES", len(classes), reason)]


def write_sem_seg_demo(folder: str, stem: str, outputs: dict, metadata: Any) -> list[str]:
    """``<stem>_labels.png``: the predicted class of each pixel (uint8; uint16 beyond 256
    classes) at the image's size."""
    scores = outputs["sem_seg"]
    dtype = np.uint8 if scores.shape[0] <= 256 else np.uint16
    labels = scores.argmax(dim=0).cpu().numpy().astype(dtype)
    path = os.path.join(folder, f"{stem}_labels.png")
    if not cv2.imwrite(path, labels):
        raise OSError(f"Could not write {path}")
    return [path]


SEM_SEG = TASK_REGISTRY.register(
    TaskFamily(
        name="sem_seg",
        meta_architectures=("SemanticSegmentor",),
        metadata_keys=("stuff_classes", "stuff_colors", "ignore_label"),
        required_metadata=("stuff_classes",),
        model_args=sem_seg_model_args,
        mapper="sem_seg",
        evaluator="sem_seg",
        draw=draw_sem_seg_picture,
        write_demo=write_sem_seg_demo,
        output_keys=("sem_seg",),
    )
)
