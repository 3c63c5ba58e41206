#!/usr/bin/env python
"""Run a trained model on images and write pictures of its predictions.

    python demo.py --config-file configs/quickstart/upernet_R18_synthetic.yaml \
        --input path/to/images/ --output demo_out/ \
        MODEL.WEIGHTS output/quickstart/upernet_R18_synthetic/model_final.pth

For each image it writes ``<stem>.png`` ([image | prediction] with class names and a legend) and,
for a semantic model, ``<stem>_labels.png`` (the predicted train id of each pixel, uint8); for a
panoptic model (its output has ``panoptic_seg``), ``<stem>_panoptic.png`` (segment ids as RGB,
``id = R + 256 G + 256^2 B``, 0 = void) and ``<stem>_segments.json`` (the segments, each with its
``category_name``); for a unified perceptual parser (``object`` / ``part`` / ``material`` /
``scene`` / ``texture`` outputs), the picture only ([image | object | part | material] and the
predicted scene).
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch

from uper_parsing.checkpoint import read_checkpoint_metadata
from uper_parsing.config import get_cfg
from uper_parsing.data import Metadata, MetadataCatalog, read_image
from uper_parsing.data.datasets import register_declared_datasets
from uper_parsing.data.panoptic_utils import id2rgb
from uper_parsing.engine import resolve_device
from uper_parsing.engine.predictor import DefaultPredictor
from uper_parsing.utils.logger import setup_logger
from uper_parsing.utils.multitask_visualizer import visualize_multitask_prediction
from uper_parsing.utils.panoptic_visualizer import segment_class_name, visualize_panoptic_prediction
from uper_parsing.utils.visualizer import save_image, visualize_sem_seg_prediction

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
logger = logging.getLogger("uper_parsing.demo")


def list_images(inputs: list[str]) -> list[str]:
    """Files, folders (their images, sorted) and glob patterns, in the order given."""
    paths: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.listdir(item))
            paths += [os.path.join(item, f) for f in found if f.lower().endswith(IMAGE_EXTENSIONS)]
        else:
            matches = sorted(glob.glob(item))
            if not matches:
                raise FileNotFoundError(f"--input {item}: no such file, folder or pattern")
            paths += matches
    return paths


def segments_json(segments_info: Sequence[Mapping[str, Any]], metadata: Any) -> list[dict]:
    """The segments as plain JSON values (tensors and numpy scalars unwrapped), each with its
    ``category_name`` (thing or stuff class name) added."""
    segments = []
    for segment in segments_info:
        plain = {k: v.tolist() if hasattr(v, "tolist") else v for k, v in segment.items()}
        plain["category_name"] = segment_class_name(plain, metadata)
        segments.append(plain)
    return segments


def write_outputs(
    rgb: np.ndarray, outputs: dict[str, Any], metadata: Any, folder: str, stem: str
) -> None:
    """Write the picture of one image's ``outputs`` and its label files into ``folder``.

    Args:
        rgb: (H, W, 3) uint8 RGB image the outputs were predicted on.
        outputs: the model's dict: ``panoptic_seg`` ``(seg_map (H, W) int, segments_info)``,
            ``sem_seg`` (K, H, W) scores, or a multi-task parser's task outputs.
    """
    picture_path = os.path.join(folder, f"{stem}.png")
    if "sem_seg" not in outputs and "panoptic_seg" not in outputs:  # a multi-task parser
        save_image(visualize_multitask_prediction(rgb, outputs, metadata), picture_path)
        return
    if "panoptic_seg" in outputs:
        seg_map, segments_info = outputs["panoptic_seg"]
        if isinstance(seg_map, torch.Tensor):
            seg_map = seg_map.cpu().numpy()
        save_image(
            visualize_panoptic_prediction(rgb, (seg_map, segments_info), metadata), picture_path
        )
        save_image(id2rgb(seg_map), os.path.join(folder, f"{stem}_panoptic.png"))
        with open(os.path.join(folder, f"{stem}_segments.json"), "w") as f:
            json.dump(segments_json(segments_info, metadata), f, indent=1)
        return
    labels = outputs["sem_seg"].argmax(dim=0).cpu().numpy().astype(np.uint8)
    save_image(visualize_sem_seg_prediction(rgb, labels, metadata), picture_path)
    cv2.imwrite(os.path.join(folder, f"{stem}_labels.png"), labels)


def _class_metadata(cfg: Any) -> Any:
    """Class names and colours to draw with: those stored in ``MODEL.WEIGHTS`` (a multi-task
    checkpoint's own class lists), else ``DATASETS.TEST[0]``'s."""
    stored = read_checkpoint_metadata(cfg.MODEL.WEIGHTS) if cfg.MODEL.WEIGHTS else None
    if stored:
        return Metadata(f"{cfg.MODEL.WEIGHTS} (stored class lists)").set(**stored)
    return MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--input", nargs="+", required=True, help="images, folders or globs")
    parser.add_argument("--output", required=True, help="folder for the pictures")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args()
    setup_logger(name="uper_parsing")

    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    resolve_device(cfg)
    cfg.freeze()
    register_declared_datasets(cfg)
    metadata = _class_metadata(cfg)
    predictor = DefaultPredictor(cfg)
    os.makedirs(args.output, exist_ok=True)
    for path in list_images(args.input):
        image = read_image(path, format=cfg.INPUT.FORMAT)
        rgb = np.ascontiguousarray(image if cfg.INPUT.FORMAT == "RGB" else image[:, :, ::-1])
        stem = os.path.splitext(os.path.basename(path))[0]
        write_outputs(rgb, predictor(image), metadata, args.output, stem)
        logger.info("%s -> %s/%s.png", path, args.output, stem)


if __name__ == "__main__":
    main()
