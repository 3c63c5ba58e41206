"""Convert weights from another codebase into this project's checkpoint format.

    python tools/convert_weights.py --from detectron2 model_final_cafdb1.pkl panoptic_fpn_R50.pth
    python tools/convert_weights.py --from detectron2 R-50.pkl R-50.pth
    python tools/convert_weights.py --from detectron2 --config-file X.yaml IN OUT [KEY VALUE ...]

IN is a path or URL (file://, http(s)://, detectron2://). OUT holds ``{"model": state dict,
"__author__", "source": {...}}``: a whole model loads with ``MODEL.WEIGHTS OUT``, a backbone
(``source.kind == "resnet"``) with ``MODEL.BACKBONE.PRETRAINED OUT``. With ``--config-file`` the
result is also compared with the model of that config (every tensor placed, same shapes).
Options come before IN OUT, the config's KEY VALUE overrides after them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

import torch
from iopath.common.file_io import PathManager

from uper_parsing.checkpoint import atomic_write
from uper_parsing.checkpoint.checkpointer import resnet_prefix
from uper_parsing.checkpoint.conversion import Conversion
from uper_parsing.checkpoint.detectron2 import convert_detectron2_file
from uper_parsing.checkpoint.paths import register_url_handlers
from uper_parsing.checkpoint.report import format_key_groups, format_shape_mismatches
from uper_parsing.config import get_cfg
from uper_parsing.modeling import build_model

logger = logging.getLogger("uper_parsing.tools.convert_weights")

# Source codebase -> converter(local path, *, trusted: bool) -> Conversion
SOURCES: dict[str, Callable[..., Conversion]] = {"detectron2": convert_detectron2_file}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--from", dest="source", required=True, choices=sorted(SOURCES), help="source codebase"
    )
    parser.add_argument("input", help="source weights: path or URL")
    parser.add_argument("output", help="converted checkpoint to write (.pth)")
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="unpickle arbitrary objects (only for files from a source you trust)",
    )
    parser.add_argument(
        "--config-file", default="", help="also check the result against this config's model"
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, help="overrides of --config-file: KEY VALUE ..."
    )
    args = parser.parse_args(argv)
    if args.opts and not args.config_file:
        parser.error(f"config overrides {args.opts} need --config-file")
    return args


def checkpoint_of(conversion: Conversion, source: str, input_path: str) -> dict:
    """The file content: ``{"model", "__author__", "source"}`` (plain types: loadable with
    ``torch.load(weights_only=True)``)."""
    return {
        "model": conversion.state_dict,
        "__author__": "uper_parsing tools/convert_weights.py",
        "source": {
            "codebase": source,
            "file": os.path.basename(input_path),
            "author": conversion.author,
            "naming": conversion.source_format,
            "kind": conversion.kind,
            "ignored": list(conversion.ignored),
            "filled": list(conversion.filled),
        },
    }


def compare_with_model(conversion: Conversion, config_file: str, opts: list[str]) -> list[str]:
    """Problems of loading the conversion into the model of ``config_file``: model tensors it
    does not fill (only the ResNet's for a backbone), tensors with no place, shape mismatches."""
    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.PRETRAINED = ""
    own = build_model(cfg).state_dict()
    state = conversion.state_dict
    if conversion.kind == "resnet":
        prefix = resnet_prefix(own) or ""
        state = {prefix + k: v for k, v in state.items()}
        own = {k: v for k, v in own.items() if k.startswith(prefix)}
    own = {k: v for k, v in own.items() if not k.endswith("num_batches_tracked")}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        (k, tuple(v.shape), tuple(own[k].shape))
        for k, v in state.items()
        if k in own and v.shape != own[k].shape
    ]
    return (
        format_shape_mismatches(mismatched)
        + format_key_groups(missing, "not filled")
        + format_key_groups(unexpected, "with no place in the model")
    )


def main(argv: list[str] | None = None) -> int:
    """Convert, optionally check, write. Returns the exit status (1 when the check fails)."""
    args = parse_args(argv)
    local = register_url_handlers(PathManager()).get_local_path(args.input)
    conversion = SOURCES[args.source](local, trusted=args.trust_pickle)
    logger.info("Converted %s: %s", args.input, conversion.summary())
    if args.config_file:
        problems = compare_with_model(conversion, args.config_file, args.opts)
        if problems:
            logger.error(
                "%s does not fit %s:\n  %s", args.input, args.config_file, "\n  ".join(problems)
            )
            return 1
        logger.info("Every tensor of the model of %s is filled", args.config_file)
    with atomic_write(args.output, "wb") as f:
        torch.save(checkpoint_of(conversion, args.source, args.input), f)
    logger.info("Wrote %s (%d tensors)", args.output, len(conversion.state_dict))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    sys.exit(main())
