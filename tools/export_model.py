#!/usr/bin/env python
"""Export a trained model to ONNX or TorchScript, with dynamic batch, height and width.

    python tools/export_model.py --config-file configs/quickstart/upernet_R18_synthetic.yaml \\
        --format onnx --output upernet.onnx \\
        MODEL.WEIGHTS output/quickstart/upernet_R18_synthetic/model_final.pth
    python tools/export_model.py --config-file ... --format torchscript --output upernet.pt \\
        --sample-image photo.jpg MODEL.WEIGHTS model_final.pth

The weights are MODEL.WEIGHTS, loaded as the predictor loads them (without it the model keeps
its random initialisation, with a warning). Export runs on the CPU; the file runs anywhere.

Input of the exported graph, "images": (N, 3, H, W) float32, raw pixel values 0-255 in the
channel order of INPUT.FORMAT, any N, H, W. Normalisation and padding happen inside the graph;
test-time resizing does not (resize beforehand if the model was trained at another scale).
Outputs, at the input size: "sem_seg" (N, K, H, W) logits for UPerNet, PSPNet, Semantic FPN and
FCN (SemanticSegmentor); one output per task for the unified perceptual parser: "object",
"material" (N, K, H, W) logits, "part" (N, P, H, W) probabilities (softmax within each object's
parts), "scene", "texture" (N, K) logits.

What does not export: Panoptic FPN as a whole. Its RPN, RoI heads and panoptic merge have
data-dependent shapes (proposals kept by NMS, detections, segments); --semantic-only exports its
backbone + FPN + semantic head ("sem_seg" (N, K_stuff + 1, H, W) logits, class 0 = things).
Sliding-window inference (TEST.MODE slide) and test-time augmentation (TEST.AUG.ENABLED) are
refused: run them around the exported graph. The pyramid pooling of PSPNet / UPerNet exports
for every size (both "avg" and "prroi" MODEL.SEM_SEG_HEAD.PPM_POOL).

The sample (--sample-image, else a random --height x --width image) only drives tracing.
Exit status: 0 exported, 2 usage or a model / setting that does not export.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import torch
from torch import nn

from uper_parsing.config import CfgNode, get_cfg
from uper_parsing.data import read_image
from uper_parsing.data.datasets import register_declared_datasets
from uper_parsing.engine import Predictor
from uper_parsing.export import EXPORT_FORMATS, NotExportableError, exportable_model
from uper_parsing.utils.logger import setup_logger

logger = logging.getLogger("uper_parsing.export_model")

EXIT_USAGE = 2
SAMPLE_SIDE = 512  # the random sample's height and width by default


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="the model's config")
    parser.add_argument("--format", required=True, choices=sorted(EXPORT_FORMATS))
    parser.add_argument("--output", required=True, metavar="FILE", help="the file to write")
    parser.add_argument("--sample-image", metavar="FILE", help="an image to trace with")
    parser.add_argument("--height", type=int, help=f"random sample height ({SAMPLE_SIDE})")
    parser.add_argument("--width", type=int, help=f"random sample width ({SAMPLE_SIDE})")
    parser.add_argument(
        "--semantic-only",
        action="store_true",
        help="Panoptic FPN: export the semantic branch (backbone + FPN + semantic head)",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: torch's)")
    parser.add_argument(
        "--opts", nargs=argparse.REMAINDER, default=[], help="the same as trailing KEY VALUE"
    )
    parser.add_argument("overrides", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    if args.sample_image and (args.height is not None or args.width is not None):
        parser.error("give --sample-image or --height / --width, not both")
    args.height = SAMPLE_SIDE if args.height is None else args.height
    args.width = SAMPLE_SIDE if args.width is None else args.width
    if min(args.height, args.width) < 1:
        parser.error(f"--height and --width must be positive, got {args.height}x{args.width}")
    if args.opset is not None and args.format != "onnx":
        parser.error("--opset applies to --format onnx")
    # trailing pairs may run on into --opts (argparse gives both to the first REMAINDER)
    args.opts = [x for x in [*args.overrides, *args.opts] if x != "--opts"]
    return args


def load_config(args: argparse.Namespace) -> CfgNode:
    """The config file with the overrides, on the CPU, uncompiled; frozen, with its
    ``DATASETS.REGISTER`` registered (class lists may come from there)."""
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.COMPILE.ENABLED = False
    if cfg.MODEL.WEIGHTS:
        cfg.MODEL.BACKBONE.PRETRAINED = ""  # MODEL.WEIGHTS holds every weight: no download
    cfg.freeze()
    register_declared_datasets(cfg)
    return cfg


def load_model(cfg: CfgNode) -> nn.Module:
    """The model of ``cfg`` with ``MODEL.WEIGHTS`` loaded, as the predictor builds it (class
    counts still unset in the config filled from the stored or registered metadata)."""
    if not cfg.MODEL.WEIGHTS:
        logger.warning("MODEL.WEIGHTS is empty: exporting a randomly initialised model")
    return Predictor(cfg).model.eval()


def sample_images(args: argparse.Namespace, cfg: CfgNode) -> torch.Tensor:
    """Returns: Tensor (1, 3, H, W) float, 0-255 in ``INPUT.FORMAT`` order: --sample-image as
    read, else uniform noise of --height x --width."""
    if args.sample_image:
        image = read_image(args.sample_image, format=cfg.INPUT.FORMAT)
        return torch.from_numpy(image).permute(2, 0, 1)[None].float()
    generator = torch.Generator().manual_seed(0)
    return torch.rand(1, 3, args.height, args.width, generator=generator) * 255


def main(argv: Sequence[str] | None = None) -> int:
    """Export; returns the exit status (see the module docstring)."""
    args = parse_args(argv)
    setup_logger(name="uper_parsing")
    try:
        cfg = load_config(args)
    except (OSError, KeyError, ValueError, AssertionError) as err:
        print(
            f"export_model: cannot use config {args.config_file} {args.opts}: {err}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        wrapper = exportable_model(load_model(cfg), semantic_only=args.semantic_only)
    except NotExportableError as err:
        print(f"export_model: {err}", file=sys.stderr)
        return EXIT_USAGE
    sample = sample_images(args, cfg)
    options = {"opset": args.opset} if args.opset is not None else {}
    EXPORT_FORMATS[args.format](wrapper, sample, args.output, **options)
    logger.info(
        "Wrote %s (%s): input images (N, 3, H, W) float 0-255 %s; outputs %s at the input size",
        args.output,
        args.format,
        cfg.INPUT.FORMAT,
        ", ".join(wrapper.output_names),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
