"""Convert detectron2 checkpoints and Caffe2 ImageNet backbones to this project's names.

Sources:

- detectron2 model-zoo ``.pkl`` files: latin-1 pickles ``{"model": {name: ndarray}, "__author__":
  ...}`` with detectron2 module names (``backbone.bottom_up.res2.0.conv1.norm.weight``, ...);
- detectron2 training checkpoints ``.pth``: ``{"model": {name: Tensor}, "optimizer": ...}``;
- Caffe2 / Detectron ImageNet backbones (``R-50.pkl``, ``R-101.pkl``): ``{name: ndarray}``, possibly
  wrapped as ``{"blobs": {...}}``, with Caffe2 names (``res2_0_branch2a_w``, ``res_conv1_bn_s``).

Every source key is either renamed (``Conversion.renamed``) or dropped on purpose
(``Conversion.ignored``: anchors, pixel statistics, BN counters, the ImageNet classifier, solver
momenta); any other key stops the conversion with its name. Class-specific tensors follow
torchvision's layout: background is class 0 of the box classifier (detectron2: the last class),
and the box regressor and mask predictor get a zero background slot in front.

``.pkl`` files are read with an unpickler that only builds numpy arrays and plain containers;
``trusted=True`` lifts that restriction for files whose origin you trust.
"""

from __future__ import annotations

import dataclasses
import importlib
import pickle
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch

from .conversion import Conversion, as_tensors, rename_keys

__all__ = [
    "Conversion",
    "convert_caffe2_resnet",
    "convert_detectron2_file",
    "convert_detectron2_state_dict",
    "is_caffe2_state_dict",
    "is_detectron2_state_dict",
    "is_resnet_state_dict",
    "load_torch_file",
    "read_detectron2_file",
]

_AFFINE = r"(?P<p>weight|bias)"
_RESNET_PREFIX = "backbone.bottom_up."  # detectron2's and this project's ResNet inside an FPN


# ----------------------------------------------------------------------------- reading files


_SAFE_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Builds numpy arrays, numbers, strings and containers; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        module = module.replace("numpy._core", "numpy.core")
        if (module, name) not in _SAFE_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a weights file holds arrays only "
                "(pass trusted=True / --trust-pickle for a file you trust)"
            )
        if module.startswith("numpy.core") and hasattr(np, "_core"):  # numpy 2 moved it
            module = "numpy._core" + module[len("numpy.core") :]
        return getattr(importlib.import_module(module), name)


def _read_pickle(path: str, trusted: bool) -> Any:
    with open(path, "rb") as f:
        if trusted:
            return pickle.load(f, encoding="latin1")
        return _ArrayUnpickler(f, encoding="latin1").load()


def load_torch_file(path: str, *, trusted: bool = False, mmap: bool = False) -> Any:
    """``torch.load`` on the CPU, tensors and plain containers only unless ``trusted``; any other
    pickled object is a ValueError that names the file and the way out. ``mmap`` maps tensors
    instead of reading them (zip archives only, torch.save's format)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=not trusted, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{path} holds more than tensors and plain containers ({e}); if you trust the file, "
            "convert it with tools/convert_weights.py --trust-pickle"
        ) from e


def read_detectron2_file(path: str, *, trusted: bool = False) -> tuple[dict[str, Any], str]:
    """Read the weights of a detectron2 ``.pkl`` / ``.pth`` or a Caffe2 ``.pkl`` file.

    Returns:
        (state, author): ``state`` maps the file's names to ndarrays / Tensors (Caffe2 ``blobs``
        unwrapped; optimizer and other training state left out); ``author`` is the file's
        ``__author__``, else "Caffe2" (pickles without one) or "detectron2" (``.pth``).
    """
    if path.endswith(".pkl"):
        data = _read_pickle(path, trusted)
        if isinstance(data, Mapping) and "model" in data and "__author__" in data:
            return dict(data["model"]), str(data["__author__"])
        if isinstance(data, Mapping) and isinstance(data.get("blobs"), Mapping):
            data = data["blobs"]
        if not isinstance(data, Mapping):
            raise ValueError(f"{path} holds a {type(data).__name__}, not a dict of arrays")
        return dict(data), "Caffe2"
    data = load_torch_file(path, trusted=trusted)
    if not isinstance(data, Mapping) or not isinstance(data.get("model"), Mapping):
        raise ValueError(f"{path} is not a detectron2 checkpoint: no 'model' dict at the top level")
    return dict(data["model"]), str(data.get("__author__", "detectron2"))


def convert_detectron2_file(path: str, *, trusted: bool = False) -> Conversion:
    """Read ``path`` (see ``read_detectron2_file``) and convert it by its key names: Caffe2 names
    with ``convert_caffe2_resnet``, otherwise ``convert_detectron2_state_dict``."""
    state, author = read_detectron2_file(path, trusted=trusted)
    if is_caffe2_state_dict(state):
        return convert_caffe2_resnet(state, author=author)
    return convert_detectron2_state_dict(state, author=author)


# ----------------------------------------------------------------------------- recognising names


def is_caffe2_state_dict(keys: Iterable[str]) -> bool:
    """Whether ``keys`` use Caffe2 / Detectron names (``conv1_w``, ``res2_0_branch2a_w``)."""
    return any(k == "conv1_w" or re.match(r"res\d+_\d+_branch", k) for k in keys)


def is_resnet_state_dict(keys: Iterable[str]) -> bool:
    """Whether every key belongs to a bare ResNet (``stem.*``, ``res2.*`` ... ``res5.*``)."""
    keys = list(keys)
    return bool(keys) and all(re.match(r"(stem|res\d)\.", k) for k in keys)


def is_detectron2_state_dict(keys: Iterable[str]) -> bool:
    """Whether ``keys`` use detectron2 module names that this project does not (``conv1.norm``,
    ``shortcut``, ``fpn_lateral2``, ``proposal_generator``, ``box_head.fc1``, ``sem_seg_head.p2``).
    """
    marker = re.compile(
        r"(^|\.)(stem\.conv1\.norm|res\d\.\d+\.shortcut)\.|^backbone\.fpn_(lateral|output)\d"
        r"|^proposal_generator\.|^roi_heads\.box_head\.fc\d|^sem_seg_head\.p\d\."
    )
    return any(marker.search(k) for k in keys)


# ----------------------------------------------------------------------------- renaming rules


@dataclasses.dataclass
class _Context:
    """Facts about the whole source needed to rename one key."""

    fpn_first_level: int  # level of the finest FPN lateral conv (2 for res2..res5)
    sem_seg_first_level: int  # level of the finest semantic-head branch (2 for p2..p5)


_Target = Callable[[re.Match, _Context], str]


def _fmt(template: str) -> _Target:
    return lambda m, ctx: template.format(**m.groupdict())


# A conv's own tensors or those of the norm detectron2 attaches to it as ``.norm``
_CONV_OR_NORM = r"(?P<t>weight|bias|norm\.(?:weight|bias|running_mean|running_var))"


def _conv_or_norm(tensor: str, conv: str, norm: str) -> str:
    """``weight`` -> ``<conv>.weight``; ``norm.bias`` -> ``<norm>.bias``."""
    if tensor.startswith("norm."):
        return f"{norm}.{tensor[len('norm.') :]}"
    return f"{conv}.{tensor}"


def _fpn(m: re.Match, ctx: _Context) -> str:
    layer = f"backbone.{m['kind']}_convs.{int(m['level']) - ctx.fpn_first_level}"
    return _conv_or_norm(m["t"], layer + ".conv", layer + ".norm")


def _sem_seg_conv(m: re.Match, ctx: _Context) -> str:
    position = int(m["j"])
    if position % 2:  # detectron2 interleaves parameterless Upsample modules: convs sit at 0, 2..
        raise ValueError(f"{m[0]}: parameters at odd position {position} of a semantic branch")
    index = int(m["level"]) - ctx.sem_seg_first_level
    layer = f"sem_seg_head.scale_heads.{index}.{position // 2}"
    return _conv_or_norm(m["t"], layer + ".conv", layer + ".norm")


def _mask_conv(m: re.Match, ctx: _Context) -> str:
    layer = f"roi_heads.mask_head.{int(m['k']) - 1}"  # torchvision Conv2dNormActivation
    return _conv_or_norm(m["t"], layer + ".0", layer + ".1")


def _resnet_rules(prefix: str) -> list[tuple[str, _Target]]:
    """detectron2 ResNet names (``conv1.norm``, ``shortcut``) -> torchvision's (``bn1``,
    ``downsample.0/1``), under ``prefix`` on both sides. Bottleneck and basic blocks alike."""
    p = re.escape(prefix)
    block = r"(?P<s>res\d)\.(?P<b>\d+)\."
    return [
        (
            p + r"stem\.conv1\." + _CONV_OR_NORM,
            lambda m, ctx: prefix + _conv_or_norm(m["t"], "stem.conv1", "stem.bn1"),
        ),
        (
            p + block + r"conv(?P<c>[123])\." + _CONV_OR_NORM,
            lambda m, ctx: (
                prefix
                + _conv_or_norm(
                    m["t"], f"{m['s']}.{m['b']}.conv{m['c']}", f"{m['s']}.{m['b']}.bn{m['c']}"
                )
            ),
        ),
        (
            p + block + r"shortcut\." + _CONV_OR_NORM,
            lambda m, ctx: (
                prefix
                + _conv_or_norm(
                    m["t"], f"{m['s']}.{m['b']}.downsample.0", f"{m['s']}.{m['b']}.downsample.1"
                )
            ),
        ),
    ]


_HEAD_RULES: list[tuple[str, _Target]] = [
    (r"backbone\.fpn_(?P<kind>lateral|output)(?P<level>\d)\." + _CONV_OR_NORM, _fpn),
    (r"proposal_generator\.rpn_head\.conv\." + _AFFINE, _fmt("rpn.head.conv.0.0.{p}")),
    (
        r"proposal_generator\.rpn_head\.objectness_logits\." + _AFFINE,
        _fmt("rpn.head.cls_logits.{p}"),
    ),
    (r"proposal_generator\.rpn_head\.anchor_deltas\." + _AFFINE, _fmt("rpn.head.bbox_pred.{p}")),
    (
        r"roi_heads\.box_head\.fc(?P<k>\d+)\." + _AFFINE,
        lambda m, ctx: f"roi_heads.box_head.layers.{2 * int(m['k']) - 1}.{m['p']}",
    ),
    (r"roi_heads\.box_predictor\.(cls_score|bbox_pred)\." + _AFFINE, lambda m, ctx: m[0]),
    (r"roi_heads\.mask_head\.mask_fcn(?P<k>\d+)\." + _CONV_OR_NORM, _mask_conv),
    (r"roi_heads\.mask_head\.deconv\." + _AFFINE, _fmt("roi_heads.mask_predictor.conv5_mask.{p}")),
    (
        r"roi_heads\.mask_head\.predictor\." + _AFFINE,
        _fmt("roi_heads.mask_predictor.mask_fcn_logits.{p}"),
    ),
    (r"sem_seg_head\.p(?P<level>\d)\.(?P<j>\d+)\." + _CONV_OR_NORM, _sem_seg_conv),
    (r"sem_seg_head\.predictor\." + _AFFINE, _fmt("sem_seg_head.predictor.{p}")),
]

# Dropped on purpose: non-persistent buffers of older detectron2 files (anchors, pixel
# statistics: the config sets them), BatchNorm counters (no effect on the weights)
_DETECTRON2_IGNORED = (
    r"pixel_mean|pixel_std|proposal_generator\.anchor_generator\.cell_anchors\.\d+"
    r"|.*\.num_batches_tracked"
)
# Dropped on purpose: the ImageNet classifier and SGD momentum blobs
_CAFFE2_IGNORED = r"fc1000_[wb]|.*_momentum"

_C2_STATS = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}
_C2_CONVS = {"2a": "conv1", "2b": "conv2", "2c": "conv3", "1": "shortcut"}
_CAFFE2_RULES: list[tuple[str, _Target]] = [
    (r"conv1_w", _fmt("stem.conv1.weight")),
    (
        r"res_conv1_(bn|gn)_(?P<st>s|b|rm|riv)",
        lambda m, ctx: f"stem.conv1.norm.{_C2_STATS[m['st']]}",
    ),
    (
        r"(?P<s>res\d)_(?P<b>\d+)_branch(?P<c>2a|2b|2c|1)_w",
        lambda m, ctx: f"{m['s']}.{m['b']}.{_C2_CONVS[m['c']]}.weight",
    ),
    (
        r"(?P<s>res\d)_(?P<b>\d+)_branch(?P<c>2a|2b|2c|1)_(bn|gn)_(?P<st>s|b|rm|riv)",
        lambda m, ctx: f"{m['s']}.{m['b']}.{_C2_CONVS[m['c']]}.norm.{_C2_STATS[m['st']]}",
    ),
]


def _first_level(keys: Iterable[str], pattern: str) -> int:
    levels = [int(m["level"]) for k in keys if (m := re.match(pattern, k))]
    return min(levels, default=2)


def _context(keys: list[str]) -> _Context:
    return _Context(
        fpn_first_level=_first_level(keys, r"backbone\.fpn_lateral(?P<level>\d)\."),
        sem_seg_first_level=_first_level(keys, r"sem_seg_head\.p(?P<level>\d)\."),
    )


# ----------------------------------------------------------------------------- class layouts


def _background_first(t: torch.Tensor, num_classes: int) -> torch.Tensor:
    """cls_score (K + 1, ...): detectron2's background row K moves to row 0."""
    return torch.cat([t[-1:], t[:-1]])


def _with_background_slot(t: torch.Tensor, num_classes: int, width: int) -> torch.Tensor:
    """(K * width, ...) class-specific (or (width, ...) class-agnostic, repeated per class) ->
    ((K + 1) * width, ...) with zeros for torchvision's background class 0."""
    if t.shape[0] == width and num_classes > 1:
        t = t.repeat(num_classes, *([1] * (t.dim() - 1)))
    if t.shape[0] != num_classes * width:
        raise ValueError(
            f"expected {num_classes} x {width} rows (one slot per class), got {t.shape[0]}"
        )
    return torch.cat([t.new_zeros((width, *t.shape[1:])), t])


_CLASS_LAYOUTS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "roi_heads.box_predictor.cls_score": _background_first,
    "roi_heads.box_predictor.bbox_pred": lambda t, k: _with_background_slot(t, k, 4),
    "roi_heads.mask_predictor.mask_fcn_logits": lambda t, k: _with_background_slot(t, k, 1),
}


def _num_things(state: Mapping[str, torch.Tensor]) -> int | None:
    """K: detectron2's cls_score has K + 1 rows (background last); None without a box head."""
    cls_score = state.get("roi_heads.box_predictor.cls_score.weight")
    return None if cls_score is None else cls_score.shape[0] - 1


def _apply_class_layouts(
    state: dict[str, torch.Tensor], num_things: int | None
) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        layout = _CLASS_LAYOUTS.get(key.rsplit(".", 1)[0])
        if layout is not None:
            if num_things is None:
                raise ValueError(f"{key} needs roi_heads.box_predictor.cls_score for the classes")
            value = layout(value, num_things)
        out[key] = value
    return out


# ----------------------------------------------------------------------------- conversions


def convert_detectron2_state_dict(
    state: Mapping[str, Any], *, author: str = "detectron2"
) -> Conversion:
    """Rename a detectron2 state dict (whole model, e.g. Panoptic FPN, or a bare backbone with
    ``stem.*`` / ``res2.*`` names) to this project's names and class layout.

    Args:
        state: detectron2 name -> ndarray / Tensor. Shapes are kept except for the class layout:
            ``cls_score`` (K+1, C) background last -> (K+1, C) background first;
            ``bbox_pred`` (4K, C) -> (4(K+1), C); mask ``predictor`` (K, C, 1, 1) ->
            (K+1, C, 1, 1), with zeros for the background.
    Raises:
        ValueError naming the keys that are neither mappable nor safe to drop.
    """
    tensors = as_tensors(state)
    keys = list(tensors)
    kind = "resnet" if is_resnet_state_dict(keys) else "model"
    rules = _resnet_rules("") if kind == "resnet" else _resnet_rules(_RESNET_PREFIX) + _HEAD_RULES
    renamed, ignored = rename_keys(keys, rules, _DETECTRON2_IGNORED, _context(keys), "detectron2")
    source = {k: tensors[k] for k in renamed}
    num_things = _num_things(source)
    converted = _apply_class_layouts({renamed[k]: v for k, v in source.items()}, num_things)
    return Conversion(converted, kind, "detectron2", author, renamed, ignored, filled=[])


def _caffe2_running_stats(blobs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Caffe2 BN blobs hold the folded affine only (``_bn_s``, ``_bn_b``): running mean 0 and
    var 1 (``_bn_rm``, ``_bn_riv``) make a BatchNorm / FrozenBatchNorm apply exactly that affine
    (up to its eps). Returns the blobs to add."""
    stats = {}
    for key, scale in blobs.items():
        if key.endswith("_bn_s") and key[: -len("s")] + "rm" not in blobs:
            stats[key[: -len("s")] + "rm"] = torch.zeros_like(scale)
            stats[key[: -len("s")] + "riv"] = torch.ones_like(scale)
    return stats


def convert_caffe2_resnet(blobs: Mapping[str, Any], *, author: str = "Caffe2") -> Conversion:
    """Convert a Caffe2 / Detectron ImageNet ResNet (``R-50.pkl``, ``R-101.pkl``; BN or GN) to
    ``ResNet``'s own names (``kind == "resnet"``), through detectron2's names.

    Caffe2 ``<conv>_w`` (C_out, C_in, k, k) -> ``.weight``; ``<conv>_bn_s`` / ``_bn_b`` (C_out,)
    -> norm ``weight`` / ``bias``, with running mean 0 and var 1 added (``filled``). These models
    need ``MODEL.RESNETS.STRIDE_IN_1X1 True`` and BGR 0-255 input with ``PIXEL_STD [1, 1, 1]``.
    ``fc1000_*`` and ``*_momentum`` are ignored.
    """
    tensors = as_tensors(blobs)
    stats = _caffe2_running_stats(tensors)
    ctx, never = _context([]), r"(?!)"
    to_d2, ignored = rename_keys(tensors, _CAFFE2_RULES, _CAFFE2_IGNORED, ctx, "Caffe2")
    stats_to_d2, _ = rename_keys(stats, _CAFFE2_RULES, never, ctx, "Caffe2")
    d2_names = {**to_d2, **stats_to_d2}
    d2_to_ours, _ = rename_keys(d2_names.values(), _resnet_rules(""), never, ctx, "Caffe2")
    every = {**tensors, **stats}
    state = {d2_to_ours[d2]: every[c2] for c2, d2 in d2_names.items()}
    renamed = {c2: d2_to_ours[d2] for c2, d2 in to_d2.items()}
    filled = [d2_to_ours[d2] for d2 in stats_to_d2.values()]
    return Conversion(state, "resnet", "caffe2", author, renamed, ignored, filled)
