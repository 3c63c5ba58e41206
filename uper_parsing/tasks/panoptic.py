"""The panoptic family (``evaluator_type "coco_panoptic_seg"``): Panoptic FPN."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..data.panoptic_utils import id2rgb
from ..visualization import Visualizer, save_image, segment_class_name
from .base import TASK_REGISTRY, ModelArg, TaskFamily

__all__ = [
    "PANOPTIC",
    "draw_panoptic_picture",
    "panoptic_model_args",
    "segments_json",
    "write_panoptic_demo",
]


def draw_panoptic_picture(image: np.ndarray, outputs: dict, d: dict, metadata: Any) -> np.ndarray:
    """[image | prediction | ground truth] of a panoptic dataset's image; the ground truth is the
    dict's panoptic PNG, left out when the dict has no ``pan_seg_file_name``."""
    panoptic_seg, segments_info = outputs["panoptic_seg"]
    visualizer = Visualizer(image, metadata)
    return visualizer.draw_panoptic_prediction(panoptic_seg, segments_info, d).get_image()


def panoptic_model_args(metadata: Any, where: str, cfg: Any) -> list[ModelArg]:
    """``MODEL.SEM_SEG_HEAD.NUM_CLASSES`` = ``len(stuff_classes) + 1`` ("things" + stuff) and,
    when the config has ``MODEL.ROI_HEADS``, ``MODEL.ROI_HEADS.NUM_CLASSES`` =
    ``len(thing_classes)``; nothing for a metadata without both lists."""
    things, stuff = metadata.get("thing_classes"), metadata.get("stuff_classes")
    if things is None or stuff is None:
        return []
    semantic = ModelArg(
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
        len(stuff) + 1,
        f'panoptic {where} needs {len(stuff) + 1} ("things" + {len(stuff)} stuff_classes)',
    )
    if cfg.MODEL.get("ROI_HEADS") is None:
        return [semantic]
    instances = ModelArg(
        "MODEL.ROI_HEADS.NUM_CLASSES",
        len(things),
        f"panoptic {where} has {len(things)} thing_classes",
    )
    return [semantic, instances]


def segments_json(segments_info: Sequence[Mapping[str, Any]], metadata: Any) -> list[dict]:
    """The segments as plain JSON values (tensors and numpy scalars unwrapped), each with its
    ``category_name`` (thing or stuff class name) added."""
    segments = []
    for segment in segments_info:
        plain = {k: v.tolist() if hasattr(v, "tolist") else v for k, v in segment.items()}
        plain["category_name"] = segment_class_name(plain, metadata)
        segments.append(plain)
    return segments


def write_panoptic_demo(folder: str, stem: str, outputs: dict, metadata: Any) -> list[str]:
    """``<stem>_panoptic.png`` (segment ids as RGB, ``id = R + 256 G + 256^2 B``, 0 = void) and
    ``<stem>_segments.json`` (the segments, each with its ``category_name``)."""
    seg_map, segments_info = outputs["panoptic_seg"]
    if isinstance(seg_map, torch.Tensor):
        seg_map = seg_map.cpu().numpy()
    png = os.path.join(folder, f"{stem}_panoptic.png")
    save_image(id2rgb(seg_map), png)
    segments = os.path.join(folder, f"{stem}_segments.json")
    with open(segments, "w") as f:
        json.dump(segments_json(segments_info, metadata), f, indent=1)
    return [png, segments]


PANOPTIC = TASK_REGISTRY.register(
    TaskFamily(
        name="coco_panoptic_seg",
        meta_architectures=("PanopticFPN",),
        metadata_keys=(
            "thing_classes",
            "thing_colors",
            "stuff_classes",
            "stuff_colors",
            "thing_dataset_id_to_contiguous_id",
            "stuff_dataset_id_to_contiguous_id",
            "ignore_label",
        ),
        required_metadata=("thing_classes", "stuff_classes"),
        model_args=panoptic_model_args,
        mapper="panoptic",
        evaluator="coco_panoptic_seg",
        draw=draw_panoptic_picture,
        write_demo=write_panoptic_demo,
        output_keys=("panoptic_seg", "sem_seg", "instances"),
        confidence_keys=(
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
            "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH",
        ),
        int_keyed_metadata=(
            "thing_dataset_id_to_contiguous_id",
            "stuff_dataset_id_to_contiguous_id",
        ),
    )
)
