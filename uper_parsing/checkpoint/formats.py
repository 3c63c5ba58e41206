"""One loader for every weights format: read a file, recognise whose names it uses, convert them
to this project's, and place them in a model or backbone.

Reading (:func:`read_weights_file`), by extension: ``.safetensors`` (``safetensors.torch``),
``.pkl`` (detectron2 / Caffe2 pickles, arrays only), anything else with ``torch.load``
(tensors and plain containers only); ``{"model": ...}`` and ``{"state_dict": ...}`` wrappers are
unwrapped. A folder means the ``model.safetensors`` / ``pytorch_model.bin`` in it.

Formats (:data:`WEIGHTS_FORMATS`, ``MODEL.WEIGHTS_FORMAT``): ``ours`` (this project's names:
our checkpoints, and files written by ``tools/convert_weights.py``, which carry a ``source``
record), ``detectron2`` (and Caffe2 ImageNet ResNets), ``mmseg``, ``hf-upernet``, ``csail``,
``csail-upp`` (CSAIL's unified perceptual parsing), ``timm``, ``torchvision``. Each foreign
format has a detector on key names and a converter to a
:class:`~uper_parsing.checkpoint.conversion.Conversion`. ``auto`` takes ``ours`` for a file with
a ``source`` record, else the one format whose detector recognises the keys (where two do, the
one whose converter accepts every key), else ``ours`` when the keys fit the model; none or
several is an error naming the file and the setting to use.

Placing (:func:`place_state_dict`): a converted backbone (a ResNet, a timm model) goes under the
prefix where the model holds it (``backbone.``, ``backbone.bottom_up.``, ``model.``); the backbone
part of a whole model is cut out for :func:`load_backbone_weights`.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from .conversion import Conversion, as_tensors
from .detectron2 import (
    convert_caffe2_resnet,
    convert_detectron2_state_dict,
    is_caffe2_state_dict,
    is_detectron2_state_dict,
    load_torch_file,
    read_detectron2_file,
)
from .paths import resolve_weights_path
from .report import format_key_groups, format_shape_mismatches, shape_mismatches

__all__ = [
    "SOURCE_METADATA_KEY",
    "WEIGHTS_FORMATS",
    "Placement",
    "WeightsFile",
    "WeightsFormat",
    "choose_weights_format",
    "convert_weights_file",
    "load_backbone_weights",
    "place_state_dict",
    "read_weights_file",
]

logger = logging.getLogger(__name__)

# Key of the ``source`` record in the metadata of a .safetensors file written by the tool
SOURCE_METADATA_KEY = "uper_parsing.source"
# The per-output norms of TimmBackbone / SwinTransformer, which ImageNet files do not hold
_OUTPUT_NORMS = "norms."
# What a folder of weights holds (transformers' names), in order of preference
_FOLDER_FILES = ("model.safetensors", "pytorch_model.bin")


# ----------------------------------------------------------------------------- reading


@dataclasses.dataclass
class WeightsFile:
    """The content of a weights file.

    Attributes:
        path: the local file read.
        state: tensor name -> Tensor / ndarray, with the file's own names.
        extra: the file's other top-level entries (optimizer, iteration, meta ...).
        author: the file's ``__author__``, if any.
        source: the ``source`` record of a file written by ``tools/convert_weights.py``.
    """

    path: str
    state: dict[str, Any]
    extra: dict[str, Any]
    author: str | None = None
    source: dict[str, Any] | None = None


def _weights_in_folder(folder: str) -> str:
    for name in _FOLDER_FILES:
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise FileNotFoundError(f"{folder} is a folder without weights ({' or '.join(_FOLDER_FILES)})")


def _read_pickle(path: str, trusted: bool) -> WeightsFile:
    state, author = read_detectron2_file(path, trusted=trusted)
    return WeightsFile(path, state, {}, author)


def _read_safetensors(path: str, trusted: bool) -> WeightsFile:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(path, framework="pt") as f:
        metadata = f.metadata() or {}
    source = json.loads(metadata[SOURCE_METADATA_KEY]) if SOURCE_METADATA_KEY in metadata else None
    return WeightsFile(path, load_file(path), {}, metadata.get("__author__"), source)


def _unwrap(data: Any, path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``{"model": sd, ...}`` / ``{"state_dict": sd, ...}`` / ``sd`` -> (sd, other entries)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{path} holds a {type(data).__name__}, not a dict of tensors")
    for key in ("model", "state_dict"):
        if isinstance(data.get(key), Mapping):
            return dict(data[key]), {k: v for k, v in data.items() if k != key}
    if data and all(isinstance(v, torch.Tensor | np.ndarray) for v in data.values()):
        return dict(data), {}
    raise ValueError(
        f"{path} has no 'model' or 'state_dict' entry and is not a state dict; "
        f"top-level keys: {sorted(map(str, data))[:10]}"
    )


def _read_torch(path: str, trusted: bool) -> WeightsFile:
    data = load_torch_file(path, trusted=trusted)
    state, extra = _unwrap(data, path)
    author = extra.pop("__author__", None)
    source = extra.pop("source", None)
    return WeightsFile(
        path,
        state,
        extra,
        None if author is None else str(author),
        dict(source) if isinstance(source, Mapping) else None,
    )


_READERS: dict[str, Callable[[str, bool], WeightsFile]] = {
    ".pkl": _read_pickle,
    ".safetensors": _read_safetensors,
}


def read_weights_file(path: str, *, trusted: bool = False) -> WeightsFile:
    """Read the weights at the local ``path`` (file or folder; see the module doc).

    ``trusted`` lets pickles build arbitrary objects (only for files you trust).
    """
    if os.path.isdir(path):
        path = _weights_in_folder(path)
    reader = _READERS.get(os.path.splitext(path)[1].lower(), _read_torch)
    return reader(path, trusted)


# ----------------------------------------------------------------------------- formats


def _lazy(module: str, name: str) -> Callable[..., Any]:
    """``module.name``, imported when first called (converters written elsewhere, models)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__qualname__ = call.__name__ = f"{module}.{name}"
    return call


def _is_detectron2_or_caffe2(keys: Collection[str]) -> bool:
    return is_detectron2_state_dict(keys) or is_caffe2_state_dict(keys)


def _convert_detectron2_or_caffe2(state: Mapping[str, Any], *, author: str) -> Conversion:
    if is_caffe2_state_dict(state):
        return convert_caffe2_resnet(state, author=author)
    return convert_detectron2_state_dict(state, author=author)


def _convert_csail_file(state: Mapping[str, Any], *, author: str) -> Conversion:
    """One CSAIL file: an encoder or a decoder state dict, or a SegmentationModule's
    (``encoder.*`` and ``decoder.*``); the other part stays empty."""
    convert = _lazy("uper_parsing.checkpoint.csail", "convert_csail_state_dicts")
    split = _lazy("uper_parsing.checkpoint.csail", "split_csail_state_dict")
    encoder, decoder = split(state)
    return convert(encoder, decoder, author=author)


@dataclasses.dataclass(frozen=True)
class WeightsFormat:
    """How one codebase's weights are recognised and converted.

    Attributes:
        name: the value of ``MODEL.WEIGHTS_FORMAT``.
        module: where ``detect`` and ``convert`` live; the format is skipped by ``auto`` while
            it cannot be imported.
        detect: keys -> whether they use this format's names (None: recognised otherwise).
        convert: (state dict, author=...) -> Conversion to this project's names (None: the
            names are this project's already).
    """

    name: str
    module: str
    detect: Callable[[Collection[str]], bool] | None
    convert: Callable[..., Conversion] | None

    def available(self) -> bool:
        try:
            return importlib.util.find_spec(self.module) is not None
        except ModuleNotFoundError:
            return False


def _format(name: str, module: str, detector: str, converter: str) -> WeightsFormat:
    return WeightsFormat(name, module, _lazy(module, detector), _lazy(module, converter))


_CHECKPOINT = "uper_parsing.checkpoint"
WEIGHTS_FORMATS: dict[str, WeightsFormat] = {
    "ours": WeightsFormat("ours", __name__, None, None),
    "detectron2": WeightsFormat(
        "detectron2", __name__, _is_detectron2_or_caffe2, _convert_detectron2_or_caffe2
    ),
    "mmseg": _format(
        "mmseg", f"{_CHECKPOINT}.mmseg", "is_mmseg_state_dict", "convert_mmseg_state_dict"
    ),
    "hf-upernet": _format(
        "hf-upernet",
        f"{_CHECKPOINT}.hf_upernet",
        "is_hf_upernet_state_dict",
        "convert_hf_upernet_state_dict",
    ),
    "csail": WeightsFormat(
        "csail",
        f"{_CHECKPOINT}.csail",
        _lazy(f"{_CHECKPOINT}.csail", "is_csail_state_dict"),
        _convert_csail_file,
    ),
    "csail-upp": _format(
        "csail-upp",
        f"{_CHECKPOINT}.csail_upp",
        "is_csail_upp_state_dict",
        "convert_csail_upp_file",
    ),
    "timm": _format("timm", f"{_CHECKPOINT}.timm", "is_timm_state_dict", "convert_timm_state_dict"),
    "torchvision": _format(
        "torchvision",
        "uper_parsing.modeling.backbone.resnet",
        "is_torchvision_state_dict",
        "convert_torchvision_state_dict",
    ),
}


def _strip_module(state: dict[str, Any]) -> dict[str, Any]:
    """Keys saved from a DistributedDataParallel model lose their ``module.``."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def _format_error(file: WeightsFile, problem: str, setting: str | None) -> ValueError:
    sample = ", ".join(sorted(file.state)[:5])
    foreign = ", ".join(name for name in WEIGHTS_FORMATS if name != "ours")
    remedy = f"convert it with tools/convert_weights.py --from <{foreign}>"
    if setting:
        remedy = f"set {setting} to one of ours, {foreign}, or {remedy}"
    return ValueError(f"{file.path} {problem} (keys such as {sample}): {remedy}")


def choose_weights_format(
    file: WeightsFile,
    weights_format: str = "auto",
    *,
    target_keys: Collection[str] | None = None,
    setting: str | None = "MODEL.WEIGHTS_FORMAT",
) -> str:
    """The format of ``file``: ``weights_format`` itself unless it is "auto" (see the module
    doc; ``target_keys`` are the names of the model the file is for).

    Raises:
        ValueError naming the file and ``setting`` (the config key that chooses the format;
        None where none does) when the format is unknown, or when "auto" finds several formats
        or none.
    """
    if weights_format != "auto":
        if weights_format not in WEIGHTS_FORMATS:
            raise ValueError(
                f"{setting or 'weights_format'}={weights_format!r} is not a weights format; use "
                f"auto or one of {', '.join(WEIGHTS_FORMATS)}"
            )
        return weights_format
    if file.source is not None:
        return "ours"
    keys = list(file.state)
    found = [
        f.name for f in WEIGHTS_FORMATS.values() if f.detect and f.available() and f.detect(keys)
    ]
    if len(found) > 1:  # names shared by two codebases: keep those whose converter takes them
        found = [name for name in found if _converts(file, name)] or found
    if len(found) > 1:
        raise _format_error(file, f"looks like several formats ({', '.join(found)})", setting)
    if found:
        return found[0]
    if target_keys is not None and place_state_dict(_strip_module(file.state), target_keys):
        return "ours"
    raise _format_error(file, "is in no weights format known here", setting)


def _converts(file: WeightsFile, weights_format: str) -> bool:
    """Whether the converter of ``weights_format`` accepts every key of ``file``."""
    try:
        convert_weights_file(file, weights_format)
    except ValueError:
        return False
    return True


def convert_weights_file(file: WeightsFile, weights_format: str) -> Conversion:
    """``file``'s state with this project's names (``weights_format`` as chosen by
    :func:`choose_weights_format`)."""
    fmt = WEIGHTS_FORMATS[weights_format]
    if fmt.convert is None:
        source = file.source or {}
        author = file.author or str(source.get("author", "uper_parsing"))
        state = as_tensors(_strip_module(file.state))
        kind = str(source.get("kind", "model"))
        return Conversion(state, kind, "ours", author, {k: k for k in state}, [], [])
    if not fmt.available():
        raise ModuleNotFoundError(f"{fmt.module} (the {fmt.name} converter) is not installed")
    return fmt.convert(file.state, author=file.author or weights_format)


# ----------------------------------------------------------------------------- placing


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where source keys go in a target: ``add + key[len(strip):]`` for keys under ``strip``
    (``matched`` of them exist in the target)."""

    strip: str
    add: str
    matched: int

    def apply(self, state: Mapping[str, Any], *, keep_outside: bool = False) -> dict[str, Any]:
        """The placed state; keys not under ``strip`` are dropped, or kept unchanged with
        ``keep_outside``."""
        n = len(self.strip)
        placed = {self.add + k[n:]: v for k, v in state.items() if k.startswith(self.strip)}
        if keep_outside:
            placed.update({k: v for k, v in state.items() if not k.startswith(self.strip)})
        return placed


def _splits(key: str) -> Iterable[tuple[str, str]]:
    """(prefix, suffix) pairs of a dotted name whose suffix keeps at least two components (a
    layer and its tensor), and the whole name."""
    parts = key.split(".")
    for i in range(max(len(parts) - 1, 1)):
        yield ".".join(parts[:i]) + ("." if i else ""), ".".join(parts[i:])


def place_state_dict(keys: Iterable[str], target_keys: Iterable[str]) -> Placement | None:
    """The prefix change that puts most of ``keys`` onto ``target_keys``: a bare ResNet
    (``stem.conv1.weight``) into a Panoptic FPN (``backbone.bottom_up.``), timm names into a
    ``TimmBackbone`` (``model.``), a whole model (``backbone.res2...``) into its backbone.

    Returns None unless the placement matches at least half of the smaller of the two sets.
    """
    keys, target_keys = list(keys), list(target_keys)
    prefixes: dict[str, set[str]] = {}
    for key in target_keys:
        for prefix, suffix in _splits(key):
            prefixes.setdefault(suffix, set()).add(prefix)
    counts: Counter[tuple[str, str]] = Counter()
    for key in keys:
        for strip, suffix in _splits(key):
            for add in prefixes.get(suffix, ()):
                counts[(strip, add)] += 1
    if not counts:
        return None
    (strip, add), matched = max(
        counts.items(), key=lambda item: (item[1], -len(item[0][0]) - len(item[0][1]))
    )
    if matched < math.ceil(min(len(keys), len(target_keys)) / 2):
        return None
    return Placement(strip, add, matched)


# ----------------------------------------------------------------------------- backbones


def _log_conversion(path: str, conversion: Conversion) -> None:
    if conversion.source_format != "ours":
        logger.info("Converted %s: %s", path, conversion.summary())


def _fit_backbone(conversion: Conversion, target: Mapping[str, Any], path: str) -> dict:
    placement = place_state_dict(conversion.state_dict, target)
    if placement is None:
        raise ValueError(
            f"MODEL.BACKBONE.PRETRAINED='{path}': its {conversion.source_format} "
            f"{conversion.kind} weights do not fit this backbone (keys such as "
            f"{', '.join(sorted(conversion.state_dict)[:3])} vs {', '.join(list(target)[:3])})"
        )
    if placement.strip:
        logger.info(
            "%s holds more than the backbone: loading its %s part",
            path,
            placement.strip.rstrip("."),
        )
    return placement.apply(conversion.state_dict)


def load_backbone_weights(
    backbone: nn.Module,
    weights: str | Mapping[str, Any],
    *,
    weights_format: str = "auto",
    unused_ok: Collection[str] = (),
) -> None:
    """Load ``MODEL.BACKBONE.PRETRAINED`` into any backbone (``ResNet``, ``TimmBackbone``,
    ``SwinTransformer``): resolve the path or URL, read the file, recognise its format
    (torchvision ResNet, detectron2 / Caffe2 ``.pkl``, mmseg / mmcv backbones and models, timm
    or original ConvNeXt / Swin, CSAIL, files written by ``tools/convert_weights.py``), convert
    it, take the backbone's part (of a whole model) and load it.

    Args:
        weights: a path or URL, or a state dict (read as a file's content).
        weights_format: "auto" or a name of ``WEIGHTS_FORMATS``.
        unused_ok: the backbone's names of tensors it has no use for by design (a timm model's
            pruned stages): reported at info level, not as a warning.

    Missing, unexpected and shape-mismatched tensors are logged by module, not fatal (a deep stem
    or a GN backbone cannot take every ImageNet tensor).
    """
    if isinstance(weights, str):
        source = weights
        file = read_weights_file(resolve_weights_path(weights, setting="MODEL.BACKBONE.PRETRAINED"))
    else:
        source, file = "a state dict", WeightsFile("a state dict", dict(weights), {})
    target = backbone.state_dict()
    name = choose_weights_format(file, weights_format, target_keys=target, setting=None)
    conversion = convert_weights_file(file, name)
    _log_conversion(source, conversion)
    state = _fit_backbone(conversion, target, source)
    mismatched = shape_mismatches(state, target)
    for key, _, _ in mismatched:
        state.pop(key)
    result = backbone.load_state_dict(state, strict=False)
    logger.info("Loaded backbone weights from %s (%d tensors)", source, len(state))
    unused = set(unused_ok)
    unexpected = [k for k in result.unexpected_keys if k not in unused]
    dropped = [k for k in result.unexpected_keys if k in unused]
    if dropped:
        logger.info("Not used by this backbone (by design): %s", ", ".join(dropped))
    _report_backbone_load(mismatched, result.missing_keys, unexpected)


def _report_backbone_load(
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
    missing: list[str],
    unexpected: list[str],
) -> None:
    skipped = {k for k, _, _ in mismatched}
    missing = [k for k in missing if k not in skipped and not k.endswith("num_batches_tracked")]
    out_norms = [k for k in missing if k.startswith(_OUTPUT_NORMS)]
    if out_norms:  # ImageNet classifiers have no per-output norms: expected, not a warning
        logger.info(
            "Backbone output norms not in the file (initial values kept): %s",
            "; ".join(format_key_groups(out_norms, "missing")),
        )
    missing = [k for k in missing if not k.startswith(_OUTPUT_NORMS)]
    for what, lines in (
        ("shape mismatch (skipped)", format_shape_mismatches(mismatched)),
        ("missing in the file", format_key_groups(missing, "missing")),
        ("in the file but not in the model", format_key_groups(unexpected, "unused")),
    ):
        if lines:
            logger.warning("Backbone tensors %s:\n  %s", what, "\n  ".join(lines))
