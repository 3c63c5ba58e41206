#!/usr/bin/env python
"""Run a trained model on images and write pictures of its predictions.

    python demo.py --config-file configs/quickstart/upernet_R18_synthetic.yaml \
        --input path/to/images/ --output demo_out/ \
        MODEL.WEIGHTS output/quickstart/upernet_R18_synthetic/model_final.pth

For each image it writes ``<stem>.png`` ([image | prediction] with class names and a legend) and
``<stem>_labels.png`` (the predicted train id of each pixel, uint8).
"""

from __future__ import annotations

import argparse
import glob
import logging
import os

import cv2
import numpy as np

from uper_parsing.config import get_cfg
from uper_parsing.data import MetadataCatalog, read_image
from uper_parsing.engine import resolve_device
from uper_parsing.engine.predictor import DefaultPredictor
from uper_parsing.utils.logger import setup_logger
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
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if cfg.DATASETS.TEST else "__unused")
    predictor = DefaultPredictor(cfg)
    os.makedirs(args.output, exist_ok=True)
    for path in list_images(args.input):
        image = read_image(path, format=cfg.INPUT.FORMAT)
        labels = predictor(image)["sem_seg"].argmax(dim=0).cpu().numpy().astype(np.uint8)
        rgb = image if cfg.INPUT.FORMAT == "RGB" else image[:, :, ::-1]
        stem = os.path.splitext(os.path.basename(path))[0]
        save_image(visualize_sem_seg_prediction(rgb, labels, metadata), f"{args.output}/{stem}.png")
        cv2.imwrite(os.path.join(args.output, f"{stem}_labels.png"), labels)
        logger.info("%s -> %s/%s.png", path, args.output, stem)


if __name__ == "__main__":
    main()
