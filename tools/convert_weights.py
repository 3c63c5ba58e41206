"""Convert weights from another codebase into this project's checkpoint format.

    # detectron2 models and Caffe2 ImageNet ResNets
    python tools/convert_weights.py --from detectron2 model_final_cafdb1.pkl panoptic_fpn_R101.pth
    python tools/convert_weights.py --from detectron2 \\
        detectron2://ImageNetPretrained/MSRA/R-50.pkl R-50.pth
    # mmsegmentation segmentors and the ImageNet backbones of its configs
    python tools/convert_weights.py --from mmseg --config-file configs/X.yaml \\
        upernet_r50_512x512_160k_ade20k_20200615_184328-8534de8d.pth upernet_R50_ade20k.pth
    python tools/convert_weights.py --from mmseg open-mmlab://resnet50_v1c resnet50_v1c.pth
    # transformers' UperNet: a model folder (config.json + model.safetensors) is checked against
    # the architecture its config.json describes
    python tools/convert_weights.py --from hf-upernet upernet-convnext-tiny/ upernet_convnext_T.pth
    # CSAIL's semantic-segmentation-pytorch: encoder and decoder into one file
    python tools/convert_weights.py --from csail encoder_epoch_30.pth \\
        --decoder decoder_epoch_30.pth upernet50_csail.pth
    # CSAIL's unified perceptual parsing (Broden+ UPerNet-50): the file also carries the Broden+
    # class lists ("metadata"), so the parser can be built without the dataset
    python tools/convert_weights.py --from csail-upp encoder_epoch_40.pth \\
        --decoder decoder_epoch_40.pth upernet50_csail_upp.pth \\
        --config-file configs/broden/csail_upp_upernet50.yaml
    # timm (and the original FB ConvNeXt / Microsoft Swin) ImageNet backbones
    python tools/convert_weights.py --from timm convnext_tiny_1k_224_ema.pth convnext_T.safetensors
    # torchvision ResNets
    python tools/convert_weights.py --from torchvision \\
        https://download.pytorch.org/models/resnet50-11ad3fa6.pth resnet50.pth

IN (and DECODER) is a path or URL (file://, https:// (downloaded once into the cache),
detectron2://, open-mmlab://). OUT holds ``{"model": state dict, "__author__", "source": {...}}``
and, for a whole model, ``"metadata"``: the class lists of the dataset the weights were trained
on (``checkpoint.published``: detectron2 -> COCO panoptic, mmseg / hf-upernet / csail -> ADE20K
when the classifier has their class count; csail-upp -> Broden+), and with ``--config-file``
``"config"`` (the config as YAML text), so that ``Predictor.from_checkpoint(OUT)`` needs
nothing else (``.pth``); a ``.safetensors`` OUT holds the tensors with the ``source`` record,
the metadata (JSON) and the config in its header. A whole model (``source.kind == "model"``)
loads with ``MODEL.WEIGHTS OUT``, a backbone (``"resnet"`` / ``"backbone"``) with
``MODEL.BACKBONE.PRETRAINED OUT`` (or ``MODEL.WEIGHTS``, into the model's backbone). With
``--config-file`` the result is also compared with the model of that config (every tensor
placed, same shapes; a backbone fills the model's backbone). Options come before IN OUT, the
config's KEY VALUE overrides after them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

import torch

from uper_parsing.checkpoint import (
    WEIGHTS_FORMATS,
    atomic_write,
    place_state_dict,
    read_weights_file,
    resolve_weights_path,
)
from uper_parsing.checkpoint.conversion import Conversion
from uper_parsing.checkpoint.formats import SOURCE_METADATA_KEY
from uper_parsing.checkpoint.metadata import (
    CONFIG_KEY,
    METADATA_KEY,
    SAFETENSORS_CONFIG_KEY,
    SAFETENSORS_METADATA_KEY,
    plain_metadata,
)
from uper_parsing.checkpoint.published import published_metadata
from uper_parsing.checkpoint.report import format_key_groups, format_shape_mismatches
from uper_parsing.config import get_cfg
from uper_parsing.data.datasets import register_declared_datasets
from uper_parsing.modeling import build_model
from uper_parsing.tasks import TASK_REGISTRY, configure_model, find_family

logger = logging.getLogger("uper_parsing.tools.convert_weights")

SOURCES = sorted(name for name in WEIGHTS_FORMATS if name != "ours")
AUTHOR = "uper_parsing tools/convert_weights.py"


def _csail_two_files() -> Any:
    from uper_parsing.checkpoint.csail import convert_csail_state_dicts

    return convert_csail_state_dicts


def _csail_upp_two_files() -> Any:
    from uper_parsing.checkpoint.csail_upp import convert_csail_upp_state_dicts

    return convert_csail_upp_state_dicts


# --from -> () -> converter of an encoder and a --decoder file
_TWO_FILE_CONVERTERS = {"csail": _csail_two_files, "csail-upp": _csail_upp_two_files}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--from", dest="source", required=True, choices=SOURCES)
    parser.add_argument("input", help="source weights: path or URL (hf-upernet: also a folder)")
    parser.add_argument("output", help="converted checkpoint to write (.pth or .safetensors)")
    parser.add_argument(
        "--decoder", default="", help="csail, csail-upp: the decoder file (path or URL)"
    )
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
    if args.decoder and args.source not in _TWO_FILE_CONVERTERS:
        parser.error(f"--decoder is for --from {' / '.join(_TWO_FILE_CONVERTERS)}")
    if args.opts and not args.config_file:
        parser.error(f"config overrides {args.opts} need --config-file")
    return args


# ----------------------------------------------------------------------------- converting


def _read(path_or_url: str, trusted: bool, setting: str) -> Any:
    return read_weights_file(resolve_weights_path(path_or_url, setting=setting), trusted=trusted)


def convert(args: argparse.Namespace) -> Conversion:
    """Read IN (and DECODER) and convert them with the converter of ``--from``."""
    file = _read(args.input, args.trust_pickle, "IN")
    author = file.author or args.source
    if args.decoder:
        decoder = _read(args.decoder, args.trust_pickle, "--decoder")
        convert_two = _TWO_FILE_CONVERTERS[args.source]()
        return convert_two(file.state, decoder.state, author=author)
    return WEIGHTS_FORMATS[args.source].convert(file.state, author=author)


def hf_config_overrides(input_path: str) -> list[str]:
    """``config_overrides_from_hf`` of the ``config.json`` next to transformers weights, or []
    when there is none."""
    from uper_parsing.checkpoint.hf_upernet import config_overrides_from_hf

    local = resolve_weights_path(input_path, setting="IN")
    folder = local if os.path.isdir(local) else os.path.dirname(local)
    config_json = os.path.join(folder, "config.json")
    if not os.path.isfile(config_json):
        return []
    with open(config_json, encoding="utf-8") as f:
        return config_overrides_from_hf(json.load(f))


# ----------------------------------------------------------------------------- checking


def configure_with_class_lists(cfg: Any, metadata: dict[str, Any] | None) -> None:
    """Fill the model config values the class lists decide (a parser's class counts), from the
    converted file's metadata when it has some (as ``MODEL.WEIGHTS`` will once the file is
    written), else from the config's datasets (``tasks.configure_model``)."""
    if metadata is None:
        configure_model(cfg, check=False)
        return
    family = TASK_REGISTRY.get(metadata.get("evaluator_type")) or find_family(cfg)
    stored = family.restore_metadata(metadata, "the converted class lists") if family else None
    configure_model(cfg, stored, check=False)


def compare_with_model(conversion: Conversion, cfg: Any) -> list[str]:
    """Problems of loading the conversion into the model of ``cfg``: tensors with no place or
    another shape, and model tensors it does not fill (for a backbone file: backbone tensors,
    except the per-output norms ImageNet weights never hold)."""
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.PRETRAINED = ""
    configure_with_class_lists(cfg, published_metadata(conversion))
    own = {k: v for k, v in build_model(cfg).state_dict().items() if "num_batches_tracked" not in k}
    state = conversion.state_dict
    if conversion.kind != "model":
        placement = place_state_dict(state, own)
        if placement is None:
            return [f"none of the {conversion.kind} tensors fits the model"]
        state = placement.apply(state, keep_outside=True)
        own = {
            k: v
            for k, v in own.items()
            if k.startswith(placement.add)
            and (k in state or not k.startswith(placement.add + "norms."))
        }
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


def check_config(args: argparse.Namespace) -> Any | None:
    """The config to check against: ``--config-file`` + overrides, and for a transformers
    UperNet the architecture of its ``config.json``; None when there is nothing to check."""
    hf = hf_config_overrides(args.input) if args.source == "hf-upernet" else []
    if not args.config_file and not hf:
        return None
    cfg = get_cfg()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(hf + list(args.opts))
    register_declared_datasets(cfg)
    return cfg


# ----------------------------------------------------------------------------- writing


def source_record(conversion: Conversion, args: argparse.Namespace) -> dict[str, Any]:
    """What the file was made from (plain types): its ``source`` entry."""
    files = [os.path.basename(os.path.normpath(args.input))]
    if args.decoder:
        files.append(os.path.basename(args.decoder))
    return {
        "codebase": args.source,
        "file": ", ".join(files),
        "author": conversion.author,
        "naming": conversion.source_format,
        "kind": conversion.kind,
        "ignored": list(conversion.ignored),
        "filled": list(conversion.filled),
        "edited": dict(conversion.edited),
    }


def write(
    conversion: Conversion, record: dict[str, Any], output: str, config: str | None = None
) -> None:
    """``.safetensors``: tensors + ``{"__author__", SOURCE_METADATA_KEY: json}`` header (and
    the class lists as JSON under SAFETENSORS_METADATA_KEY, the config under
    SAFETENSORS_CONFIG_KEY); otherwise ``torch.save`` of ``{"model", "__author__", "source"}``,
    ``"metadata"`` and ``"config"`` (loadable with ``torch.load(weights_only=True)``)."""
    metadata = published_metadata(conversion)
    classes = None if metadata is None else plain_metadata(metadata)
    with atomic_write(output, "wb") as f:
        if output.endswith(".safetensors"):
            from safetensors.torch import save

            tensors = {k: v.contiguous() for k, v in conversion.state_dict.items()}
            header = {"__author__": AUTHOR, SOURCE_METADATA_KEY: json.dumps(record)}
            if classes is not None:
                header[SAFETENSORS_METADATA_KEY] = json.dumps(classes)
            if config is not None:
                header[SAFETENSORS_CONFIG_KEY] = config
            f.write(save(tensors, metadata=header))
        else:
            data = {"model": conversion.state_dict, "__author__": AUTHOR, "source": record}
            if classes is not None:
                data[METADATA_KEY] = classes
            if config is not None:
                data[CONFIG_KEY] = config
            torch.save(data, f)


def main(argv: list[str] | None = None) -> int:
    """Convert, optionally check, write. Returns the exit status (1 when the check fails)."""
    args = parse_args(argv)
    conversion = convert(args)
    logger.info("Converted %s: %s", args.input, conversion.summary())
    cfg = check_config(args)
    config = None
    if cfg is not None:
        config = cfg.dump() if conversion.kind == "model" else None
        problems = compare_with_model(conversion, cfg)
        what = args.config_file or "its config.json"
        if problems:
            logger.error("%s does not fit %s:\n  %s", args.input, what, "\n  ".join(problems))
            return 1
        logger.info("Every tensor of the model of %s is filled", what)
    write(conversion, source_record(conversion, args), args.output, config)
    logger.info("Wrote %s (%d tensors)", args.output, len(conversion.state_dict))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    sys.exit(main())
