"""Run a trained model on images or a video and write pictures of its predictions.

    uper-demo --config-file configs/quickstart/upernet_R18_synthetic.yaml \
        --input path/to/images/ --output demo_out/ \
        MODEL.WEIGHTS output/quickstart/upernet_R18_synthetic/model_final.pth
    uper-demo --checkpoint output/quickstart/upernet_R18_synthetic/model_final.pth \
        --input "photos/*.jpg" --output demo_out/      # config and classes from the checkpoint
    uper-demo --checkpoint model_final.pth --video-input clip.mp4 --output demo_out/

For each image it writes ``<stem>.png`` ([image | prediction] with class names and a legend,
drawn by the model's task record) and what the record's demo writer adds: for a semantic model
``<stem>_labels.png`` (the predicted train id of each pixel); for a panoptic model
``<stem>_panoptic.png`` (segment ids as RGB, ``id = R + 256 G + 256^2 B``, 0 = void) and
``<stem>_segments.json`` (the segments, each with its ``category_name``); for a unified
perceptual parser, the picture only ([image | object | part | material] and the predicted
scene). An image that cannot be read is named, skipped and counted in the summary at the end. A
video gives ``<stem>.mp4``: the picture of every frame.

The ``uper-demo`` command; ``python demo.py`` runs the same :func:`main`.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from ..config import get_cfg
from ..data import read_image
from ..data.datasets import register_declared_datasets
from ..engine import Predictor, resolve_device
from ..tasks import TASK_REGISTRY, TaskFamily, family_of_outputs
from ..utils.logger import setup_logger
from ..visualization import save_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
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


def _family(metadata: Any, outputs: dict[str, Any]) -> TaskFamily:
    """The record of ``metadata``'s ``evaluator_type``, else the one the outputs' keys name."""
    name = getattr(metadata, "evaluator_type", None)
    family = TASK_REGISTRY.get(name) if name else family_of_outputs(outputs)
    if family is None:
        raise ValueError(f"No task record draws outputs with keys {sorted(outputs)}")
    return family


def write_outputs(
    rgb: np.ndarray,
    outputs: dict[str, Any],
    metadata: Any,
    folder: str,
    stem: str,
    family: TaskFamily | None = None,
) -> list[str]:
    """Write the picture of one image's ``outputs`` and its family's demo files into ``folder``.

    Args:
        rgb: (H, W, 3) uint8 RGB image the outputs were predicted on.
        outputs: the model's dict for the image.
        family: the model's task record; default: by ``metadata.evaluator_type``, else by the
            output keys.

    Returns:
        The paths written, the picture ``<stem>.png`` first.
    """
    family = family if family is not None else _family(metadata, outputs)
    picture = os.path.join(folder, f"{stem}.png")
    save_image(family.draw(np.ascontiguousarray(rgb), outputs, {}, metadata), picture)
    return [picture, *family.write_demo(folder, stem, outputs, metadata)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="the model's config")
    parser.add_argument(
        "--checkpoint",
        default="",
        metavar="FILE",
        help="a checkpoint of this project's trainer: its stored config and classes are used "
        "(with --config-file, that config instead of the stored one)",
    )
    parser.add_argument("--input", nargs="+", help="images, folders or glob patterns")
    parser.add_argument("--video-input", metavar="FILE", help="a video file (cv2.VideoCapture)")
    parser.add_argument("--output", required=True, help="folder for the pictures")
    parser.add_argument(
        "--confidence-threshold",
        type=float,
        default=None,
        help="minimum score of the instances shown (panoptic models); default: the config's",
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (MODEL.DEVICE)")
    parser.add_argument(
        "--opts", nargs=argparse.REMAINDER, default=[], help="the same as trailing KEY VALUE"
    )
    parser.add_argument("overrides", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    if not args.config_file and not args.checkpoint:
        parser.error("give --config-file or --checkpoint (or both)")
    if not args.input and not args.video_input:
        parser.error("give --input or --video-input")
    args.opts = list(args.overrides) + list(args.opts)
    return args


def build_predictor(args: argparse.Namespace) -> Predictor:
    """``Predictor.from_checkpoint`` with ``--checkpoint``, else ``Predictor`` of the config."""
    if args.checkpoint:
        return Predictor.from_checkpoint(
            args.checkpoint,
            config=args.config_file or None,
            device=args.device,
            overrides=args.opts,
            confidence_threshold=args.confidence_threshold,
        )
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if args.device:
        cfg.MODEL.DEVICE = args.device
    resolve_device(cfg)
    cfg.freeze()
    register_declared_datasets(cfg)
    return Predictor(cfg, confidence_threshold=args.confidence_threshold)


def run_images(predictor: Predictor, paths: list[str], output: str) -> list[str]:
    """Predict and write every image of ``paths``; returns the paths that could not be read
    (each named in a warning when it is skipped)."""
    skipped = []
    for path in tqdm(paths, desc="images", unit="image"):
        try:
            rgb = read_image(path, format="RGB")
        except (OSError, ValueError) as err:
            logger.warning("Skipping %s: %s", path, err)
            skipped.append(path)
            continue
        stem = os.path.splitext(os.path.basename(path))[0]
        outputs = predictor(rgb, format="RGB")
        write_outputs(rgb, outputs, predictor.metadata, output, stem, predictor.family)
    return skipped


def _frames(capture: cv2.VideoCapture) -> Iterator[np.ndarray]:
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        yield frame


def run_video(predictor: Predictor, path: str, output: str) -> str:
    """The picture of every frame of the video ``path``, as ``output/<stem>.mp4`` (the frame
    rate of the input); returns its path."""
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise FileNotFoundError(f"--video-input {path}: cannot be opened as a video")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    out_path = os.path.join(output, f"{os.path.splitext(os.path.basename(path))[0]}.mp4")
    writer, size = None, None
    try:
        for frame in tqdm(_frames(capture), total=total, desc="frames", unit="frame"):
            picture = predictor.draw(frame, predictor(frame, format="BGR"), format="BGR")
            if writer is None:
                size = (picture.shape[1], picture.shape[0])
                writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
                if not writer.isOpened():
                    raise OSError(f"Could not open {out_path} for writing (mp4v)")
            if (picture.shape[1], picture.shape[0]) != size:  # legends differ between frames
                picture = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
            writer.write(np.ascontiguousarray(picture[:, :, ::-1]))
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if writer is None:
        raise ValueError(f"--video-input {path}: no frame could be read")
    return out_path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logger(name="uper_parsing")
    predictor = build_predictor(args)
    os.makedirs(args.output, exist_ok=True)
    if args.video_input:
        logger.info("Wrote %s", run_video(predictor, args.video_input, args.output))
    if not args.input:
        return 0
    paths = list_images(args.input)
    skipped = run_images(predictor, paths, args.output)
    logger.info("Wrote pictures of %d image(s) to %s", len(paths) - len(skipped), args.output)
    if skipped:
        logger.warning("Skipped %d unreadable image(s): %s", len(skipped), ", ".join(skipped))
    return 1 if skipped and len(skipped) == len(paths) else 0
