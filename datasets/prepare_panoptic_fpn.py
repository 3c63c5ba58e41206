#!/usr/bin/env python
"""Make the Panoptic FPN semantic maps of COCO 2017 panoptic.

For each split, every PNG of ``coco/panoptic_<split>2017/`` (listed in
``coco/annotations/panoptic_<split>2017.json``) becomes a uint8 PNG of the same name in
``coco/panoptic_semseg_<split>2017/``: 0 = any thing (crowd included), ``1 + s`` = stuff class
``s`` (the 53 COCO stuff classes in category order), 255 = void. The values are those that
``uper_parsing.data.panoptic_utils.read_panoptic_semantic`` derives when no map exists, so the
maps only save time when training. Files already written are skipped; each file is written to a
temporary name and renamed, so an interrupted run can simply be started again.

    python datasets/prepare_panoptic_fpn.py --coco-root $UPER_PARSING_DATASETS/coco
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2

from uper_parsing.data.datasets.coco_panoptic import load_coco_panoptic_json
from uper_parsing.data.datasets.coco_panoptic_categories import COCO_PANOPTIC_CATEGORIES
from uper_parsing.data.panoptic_utils import panoptic_semantic, read_panoptic

logger = logging.getLogger("prepare_panoptic_fpn")

SPLITS = ("train", "val")


def convert_one(item: tuple[dict[str, Any], str]) -> bool:
    """Write the semantic map of one dataset dict to ``out_path`` unless it exists.

    Args:
        item: (dataset dict with ``pan_seg_file_name`` and contiguous ``segments_info``,
            out_path).

    Returns:
        True when the file was written, False when it already existed.
    """
    record, out_path = item
    if os.path.exists(out_path):
        return False
    semantic = panoptic_semantic(read_panoptic(record), record["segments_info"])
    folder, name = os.path.split(out_path)
    tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}.png")
    if not cv2.imwrite(tmp, semantic):
        raise OSError(f"Could not write {tmp}")
    os.replace(tmp, out_path)
    return True


def convert_split(coco_root: str | os.PathLike, split: str, workers: int) -> tuple[int, int]:
    """Convert the panoptic PNGs of one split.

    Returns:
        (number written, number skipped because already there).
    """
    coco_root = Path(coco_root)
    json_file = coco_root / "annotations" / f"panoptic_{split}2017.json"
    out_dir = coco_root / f"panoptic_semseg_{split}2017"
    records = load_coco_panoptic_json(
        json_file,
        coco_root / f"{split}2017",
        coco_root / f"panoptic_{split}2017",
        {"categories": COCO_PANOPTIC_CATEGORIES},
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    items = [(r, str(out_dir / Path(r["pan_seg_file_name"]).name)) for r in records]
    if workers <= 1:
        written = sum(convert_one(item) for item in items)
    else:
        with mp.Pool(workers) as pool:
            written = sum(pool.imap_unordered(convert_one, items, chunksize=16))
    return written, len(items) - written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--coco-root", required=True, help="the coco folder (holds annotations/)")
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for split in args.splits:
        written, skipped = convert_split(args.coco_root, split, args.workers)
        logger.info("%s: wrote %d semantic maps, %d already there", split, written, skipped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
