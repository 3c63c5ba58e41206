#!/usr/bin/env python
"""Draw the ground truth of a config's training datasets, as annotated or as the model sees it.

    python tools/visualize_data.py --config-file configs/quickstart/upernet_R18_synthetic.yaml \
        --source annotation --output vis_data/
    python tools/visualize_data.py --config-file C --source dataloader --output DIR \
        --num-images 16 INPUT.CROP.ENABLED False

``--source annotation``: the dataset dicts of ``DATASETS.TRAIN`` (any registered family:
semantic, panoptic, multi-task; builtin names under ``UPER_PARSING_DATASETS``, declared ones
through ``DATASETS.REGISTER``), each image with its labels as stored, read by the project's label
readers: the first N images of each dataset, written as ``<dataset>_<image id>.png``.

``--source dataloader``: the training batches as the trainer's loader yields them, after the
training mapper: the mapped image with its mapped labels (semantic map, panoptic instances and
stuff, multi-task maps), so resizing, cropping, flipping and colour jitter are visible; N images
in all, written as ``batch<b>_<i>.png``.

Exit status: 0 pictures written; 2 usage or config error (bad arguments, unreadable config file,
unknown config key, no registered training dataset).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from uper_parsing.config import CfgNode
from uper_parsing.data import DatasetCatalog, MetadataCatalog, read_image
from uper_parsing.engine import DefaultTrainer
from uper_parsing.utils.logger import setup_logger
from uper_parsing.visualization import Visualizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_dataset  # noqa: E402  (tools/check_dataset.py: the config loading both tools share)
from check_dataset import UsageError  # noqa: E402

EXIT_OK, EXIT_USAGE = 0, 2
SOURCES = ("annotation", "dataloader")
logger = logging.getLogger("uper_parsing.visualize_data")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to config file")
    parser.add_argument("--source", required=True, choices=SOURCES, help="what to draw")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder for the pictures")
    parser.add_argument(
        "--num-images",
        type=int,
        default=10,
        metavar="N",
        help="pictures per dataset (annotation) or in all (dataloader); default 10",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser.parse_args(argv)


def load_config(args: argparse.Namespace) -> CfgNode:
    """The config of ``--config-file`` with the overrides, frozen, its ``DATASETS.REGISTER``
    registered and every ``DATASETS.TRAIN`` name registered (else UsageError)."""
    cfg = check_dataset.load_config(args)
    unknown = [n for n in cfg.DATASETS.TRAIN if n not in DatasetCatalog]
    if unknown or not cfg.DATASETS.TRAIN:
        raise UsageError(f"DATASETS.TRAIN datasets not registered: {unknown or 'none given'}")
    cfg.freeze()
    return cfg


def _file_id(dataset_dict: Mapping[str, Any]) -> str:
    """The dict's ``image_id`` (else its file's stem), safe as a file name."""
    stem = os.path.splitext(os.path.basename(dataset_dict["file_name"]))[0]
    return str(dataset_dict.get("image_id", stem)).replace("/", "_")  # Broden ids: folder/name


def draw_annotations(cfg: CfgNode, output: str, num_images: int) -> Iterator[str]:
    """Draw the first ``num_images`` dataset dicts of each ``DATASETS.TRAIN`` dataset; yields the
    paths written."""
    for name in cfg.DATASETS.TRAIN:
        metadata = MetadataCatalog.get(name)
        for dataset_dict in DatasetCatalog.get(name)[:num_images]:
            image = read_image(dataset_dict["file_name"], format="RGB")
            path = os.path.join(output, f"{name}_{_file_id(dataset_dict)}.png")
            Visualizer(image, metadata).draw_dataset_dict(dataset_dict).save(path)
            yield path


def mapped_rgb(image: torch.Tensor, image_format: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a mapped (3, H, W) uint8 image in ``image_format`` order."""
    rgb = image.permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray(rgb if image_format == "RGB" else rgb[:, :, ::-1])


def draw_dataloader(cfg: CfgNode, output: str, num_images: int) -> Iterator[str]:
    """Draw the first ``num_images`` mapped images of the trainer's training loader with their
    mapped labels; yields the paths written."""
    if num_images <= 0:
        return
    metadata = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])  # the training sets share classes
    written = 0
    for batch_index, batch in enumerate(DefaultTrainer.build_train_loader(cfg)):
        for index, mapped in enumerate(batch):
            if written == num_images:
                return
            rgb = mapped_rgb(mapped["image"], cfg.INPUT.FORMAT)
            path = os.path.join(output, f"batch{batch_index:03d}_{index}.png")
            Visualizer(rgb, metadata).draw_dataset_dict(mapped).save(path)
            written += 1
            yield path


_DRAWERS = {"annotation": draw_annotations, "dataloader": draw_dataloader}


def main(argv: Sequence[str] | None = None) -> int:
    """Write the pictures; returns the exit status (see the module docstring)."""
    args = parse_args(argv)
    setup_logger(name="uper_parsing")
    try:
        cfg = load_config(args)
    except UsageError as err:
        print(f"visualize_data: {err}", file=sys.stderr)
        return EXIT_USAGE
    os.makedirs(args.output, exist_ok=True)
    count = 0
    for path in _DRAWERS[args.source](cfg, args.output, args.num_images):
        logger.info("Wrote %s", path)
        count += 1
    print(f"Wrote {count} picture(s) of {args.source} ground truth to {args.output}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
