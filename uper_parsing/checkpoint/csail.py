"""Convert CSAIL's ADE20K models (semantic-segmentation-pytorch, ``mit_semseg``) to this project's
SemanticSegmentor.

CSAIL saves an encoder and a decoder file (``encoder_epoch_*.pth``, ``decoder_epoch_*.pth``);
the names below are those of ``mit_semseg/models/models.py`` and ``resnet.py``:

- encoders ``resnet50`` / ``resnet101`` and their ``dilated`` variants (``ResnetDilated``, output
  stride 8): a "deep-base" stem ``conv1`` (3->64, stride 2), ``conv2`` (64->64), ``conv3``
  (64->128) with ``bn1..3``, then torchvision-style ``layer1..4`` reading 128 channels ->
  ``backbone.stem.conv{1,2,3}`` / ``bn{1,2,3}`` and ``backbone.res2..res5``
  (``MODEL.RESNETS.STEM_TYPE "deep_base"``);
- decoder ``upernet`` -> UPerNetHead: ``ppm_conv.{i}`` -> ``ppm.branches.{i}.1``,
  ``ppm_last_conv`` -> ``bottleneck``, ``fpn_in.{i}`` -> ``lateral_convs.{i}``, ``fpn_out.{i}.0``
  -> ``fpn_convs.{i}``, ``conv_last.0`` -> ``fpn_bottleneck``, ``conv_last.1`` -> ``predictor``
  (CSAIL has no dropout there);
- decoder ``ppm_deepsup`` (and ``ppm``) -> PSPHead: ``ppm.{i}.1`` / ``.2`` -> ``ppm.branches.{i}.1``
  conv / norm, ``conv_last.0`` / ``.1`` -> ``bottleneck``, ``conv_last.4`` -> ``predictor``; the
  deep supervision ``cbr_deepsup`` / ``conv_last_deepsup`` -> the auxiliary FCNHead on res4
  (``aux_head.convs.0``, ``aux_head.predictor``).

:func:`csail_config_overrides` gives the matching config. CSAIL's UPerNet applies each pyramid
pooling conv AFTER upsampling the pooled map (``pool_conv(interpolate(pool(x)))``), where
UPerNetHead by default (mmseg's order) convolves the pooled map and upsamples the result; the
overrides of a CSAIL UPerNet set ``MODEL.SEM_SEG_HEAD.PPM_CONV_AFTER_UPSAMPLE True``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from .conversion import Conversion, Rule, as_tensors, rename_keys

__all__ = [
    "ENCODER_RULES",
    "SYNC_BN_IGNORED",
    "affine_rule",
    "conv_norm_act_rules",
    "convert_csail_state_dicts",
    "csail_config_overrides",
    "is_csail_state_dict",
    "rename_csail_part",
    "rule_target",
    "split_csail_state_dict",
    "upernet_pyramid_rules",
]

SOURCE_FORMAT = "csail"

_AFFINE = r"(?P<p>weight|bias)"
_BN = r"(?P<p>weight|bias|running_mean|running_var)"

_MARKER = re.compile(
    r"(encoder\.)?conv3\.weight$"  # the deep-base stem (torchvision's ResNet has no conv3)
    r"|(decoder\.)?(ppm_conv|ppm_last_conv|fpn_in|fpn_out|cbr_deepsup|conv_last_deepsup)\."
    r"|(decoder\.)?ppm\.\d+\.1\.weight$"
)


def rule_target(template: str, **shifts: int) -> Callable[[re.Match, str], str]:
    """A rule target: ``{prefix}`` (the context) + ``template`` filled with the match's named
    groups, those in ``shifts`` turned into ints and shifted (``layer1`` is ``res2``: ``s=1``)."""

    def target(m: re.Match, prefix: str) -> str:
        groups = m.groupdict()
        for name, by in shifts.items():
            groups[name] = int(groups[name]) + by
        return template.format(prefix=prefix, **groups)

    return target


def conv_norm_act_rules(source: str, target: str) -> list[Rule]:
    """CSAIL's Sequential of a bias-free conv (``source``.0), BatchNorm (``.1``) and ReLU ->
    ConvNormAct ``target`` (``conv``, ``norm``)."""
    return [
        (rf"{source}\.0\.weight", rule_target(target + ".conv.weight")),
        (rf"{source}\.1\.{_BN}", rule_target(target + ".norm.{p}")),
    ]


def affine_rule(source: str, target: str) -> Rule:
    """A conv / linear layer with a bias: ``source``.weight / .bias -> ``target``.weight / .bias."""
    return (rf"{source}\.{_AFFINE}", rule_target(target + ".{p}"))


def upernet_pyramid_rules(head: str) -> list[Rule]:
    """CSAIL's UPerNet pyramid (``ppm_conv``, ``ppm_last_conv``, ``fpn_in``, ``fpn_out``) ->
    a UPerNetHead under ``head`` (e.g. "sem_seg_head."); its fusion conv is named differently in
    the semantic (``conv_last.0``) and the unified-parsing (``conv_fusion``) decoders."""
    return [
        *conv_norm_act_rules(r"ppm_conv\.(?P<i>\d+)", head + "ppm.branches.{i}.1"),
        *conv_norm_act_rules(r"ppm_last_conv", head + "bottleneck"),
        *conv_norm_act_rules(r"fpn_in\.(?P<i>\d+)", head + "lateral_convs.{i}"),
        *conv_norm_act_rules(r"fpn_out\.(?P<i>\d+)\.0", head + "fpn_convs.{i}"),
    ]


# CSAIL's deep-base ResNet (the context of a rule is the prefix to put the names under)
ENCODER_RULES: list[Rule] = [
    (r"conv(?P<k>[123])\.weight", rule_target("{prefix}stem.conv{k}.weight")),
    (rf"bn(?P<k>[123])\.{_BN}", rule_target("{prefix}stem.bn{k}.{p}")),
    (
        rf"layer(?P<s>[1-4])\.(?P<b>\d+\.(?:conv[123]|bn[123]|downsample\.[01]))\.{_BN}",
        rule_target("{prefix}res{s}.{b}.{p}", s=1),
    ),
]

_HEAD = "sem_seg_head."
_UPERNET_RULES: list[Rule] = [
    *upernet_pyramid_rules(_HEAD),
    *conv_norm_act_rules(r"conv_last\.0", _HEAD + "fpn_bottleneck"),
    affine_rule(r"conv_last\.1", _HEAD + "predictor"),
]
_PPM_RULES: list[Rule] = [
    (r"ppm\.(?P<i>\d+)\.1\.weight", rule_target(_HEAD + "ppm.branches.{i}.1.conv.weight")),
    (rf"ppm\.(?P<i>\d+)\.2\.{_BN}", rule_target(_HEAD + "ppm.branches.{i}.1.norm.{p}")),
    *conv_norm_act_rules(r"conv_last", _HEAD + "bottleneck"),
    affine_rule(r"conv_last\.4", _HEAD + "predictor"),
    *conv_norm_act_rules(r"cbr_deepsup", "aux_head.convs.0"),
    affine_rule(r"conv_last_deepsup", "aux_head.predictor"),
]
# Decoder family -> (regex one of its keys matches, renaming rules)
_DECODERS: dict[str, tuple[str, list[Rule]]] = {
    "upernet": (r"ppm_conv\.", _UPERNET_RULES),
    "ppm": (r"ppm\.\d+\.", _PPM_RULES),
}

# Dropped on purpose: BatchNorm counters, and the training accumulators of CSAIL's
# SynchronizedBatchNorm2d (running_mean / running_var are derived from them and used at test)
SYNC_BN_IGNORED = r".*\.(?:num_batches_tracked|_tmp_running_mean|_tmp_running_var|_running_iter)"
# ... and the ImageNet classifier of CSAIL's pretrained encoders (resnet50-imagenet.pth)
_IMAGENET_IGNORED = SYNC_BN_IGNORED + r"|fc\.(?:weight|bias)"


def is_csail_state_dict(keys: Iterable[str]) -> bool:
    """Whether ``keys`` use CSAIL's names: a deep-base encoder (top-level ``conv3``) or a
    UPerNet / PPM decoder (``ppm_conv``, ``fpn_in``, ``ppm.{i}.1``, ``cbr_deepsup``, ...), also
    under a SegmentationModule's ``encoder.`` / ``decoder.``."""
    return any(_MARKER.match(k) for k in keys)


def split_csail_state_dict(state: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(encoder, decoder) of one CSAIL state dict: a SegmentationModule's (``encoder.*``,
    ``decoder.*``; any other key is an error naming it), or an encoder's or a decoder's alone
    (the other part empty)."""
    if not any(k.startswith(("encoder.", "decoder.")) for k in state):
        if any(re.match(r"(conv1|layer1)\.", k) for k in state):
            return dict(state), {}
        return {}, dict(state)
    parts: dict[str, dict[str, Any]] = {"encoder.": {}, "decoder.": {}}
    for key, value in state.items():
        prefix = key.split(".", 1)[0] + "."
        if prefix not in parts:
            raise ValueError(
                f"CSAIL SegmentationModule key {key} is in neither encoder nor decoder"
            )
        parts[prefix][key[len(prefix) :]] = value
    return parts["encoder."], parts["decoder."]


def _decoder_family(keys: Iterable[str]) -> str:
    """The decoder whose names ``keys`` use: "upernet" or "ppm" (ppm_deepsup and ppm)."""
    keys = list(keys)
    for family, (marker, _) in _DECODERS.items():
        if any(re.match(marker, k) for k in keys):
            return family
    raise ValueError(
        f"no CSAIL upernet / ppm_deepsup decoder among the keys (first keys: {sorted(keys)[:5]})"
    )


def rename_csail_part(
    tensors: Mapping[str, torch.Tensor], rules: list[Rule], ignored: str, prefix: str, part: str
) -> tuple[dict[str, torch.Tensor], dict[str, str], list[str]]:
    """Rename one part (``part`` = "encoder" / "decoder"); the account names its keys as a
    SegmentationModule does (``encoder.conv1.weight``). Returns (state, renamed, ignored)."""
    renamed, dropped = rename_keys(tensors, rules, ignored, prefix, f"CSAIL {part}")
    state = {new: tensors[old] for old, new in renamed.items()}
    account = {f"{part}.{old}": new for old, new in renamed.items()}
    return state, account, [f"{part}.{k}" for k in dropped]


def convert_csail_state_dicts(
    encoder: Mapping[str, Any], decoder: Mapping[str, Any], *, author: str = "CSAIL"
) -> Conversion:
    """Rename a CSAIL encoder and decoder to a SemanticSegmentor's names (``kind == "model"``;
    build it with :func:`csail_config_overrides`). Shapes are kept; ``Conversion.renamed`` names
    the sources as a SegmentationModule does (``encoder.*``, ``decoder.*``).

    An empty ``decoder`` converts the encoder alone: under ``backbone.`` (``kind == "model"``),
    or, for CSAIL's ImageNet ResNets (which hold the classifier ``fc``), with ``ResNet``'s own
    names (``kind == "resnet"``, ``fc`` ignored).

    Raises:
        ValueError naming the keys that are neither mappable nor safe to drop.
    """
    enc, dec = as_tensors(encoder), as_tensors(decoder)
    imagenet = not dec and "fc.weight" in enc
    prefix, kind = ("", "resnet") if imagenet else ("backbone.", "model")
    ignored = _IMAGENET_IGNORED if imagenet else SYNC_BN_IGNORED
    state, renamed, dropped = rename_csail_part(enc, ENCODER_RULES, ignored, prefix, "encoder")
    if dec:
        _, rules = _DECODERS[_decoder_family(dec)]
        dec_state, dec_renamed, dec_dropped = rename_csail_part(
            dec, rules, SYNC_BN_IGNORED, "", "decoder"
        )
        state.update(dec_state)
        renamed.update(dec_renamed)
        dropped += dec_dropped
    return Conversion(state, kind, SOURCE_FORMAT, author, renamed, dropped, filled=[])


# ----------------------------------------------------------------------------- configs


@dataclasses.dataclass(frozen=True)
class _Encoder:
    depth: int
    output_stride: int


_ENCODERS: dict[str, _Encoder] = {
    "resnet50": _Encoder(50, 32),
    "resnet50dilated": _Encoder(50, 8),
    "resnet101": _Encoder(101, 32),
    "resnet101dilated": _Encoder(101, 8),
}
_UPERNET: dict[str, Any] = {
    "MODEL.SEM_SEG_HEAD.NAME": "UPerNetHead",
    "MODEL.SEM_SEG_HEAD.IN_FEATURES": ["res2", "res3", "res4", "res5"],
    "MODEL.SEM_SEG_HEAD.DROPOUT": 0.0,
    "MODEL.SEM_SEG_HEAD.PPM_CONV_AFTER_UPSAMPLE": True,
    "MODEL.AUX_HEAD.ENABLED": False,
}
_PPM_DEEPSUP: dict[str, Any] = {
    "MODEL.SEM_SEG_HEAD.NAME": "PSPHead",
    "MODEL.SEM_SEG_HEAD.IN_FEATURES": ["res5"],
    "MODEL.SEM_SEG_HEAD.DROPOUT": 0.1,  # conv_last.3 (and dropout_deepsup)
    "MODEL.AUX_HEAD.ENABLED": True,
    "MODEL.AUX_HEAD.NAME": "FCNHead",
    "MODEL.AUX_HEAD.IN_FEATURES": ["res4"],
    "MODEL.AUX_HEAD.CONVS_DIM": 512,  # cbr_deepsup: fc_dim // 2 -> fc_dim // 4 (fc_dim 2048)
    "MODEL.AUX_HEAD.NUM_CONVS": 1,
    "MODEL.AUX_HEAD.LOSS_WEIGHT": 0.4,  # CSAIL's TRAIN.deep_sup_scale
}
_DECODER_OVERRIDES: dict[str, dict[str, Any]] = {"upernet": _UPERNET, "ppm_deepsup": _PPM_DEEPSUP}


def _cfg_text(value: Any) -> str:
    """A value as ``merge_from_list`` reads it: names as they are, the rest as literals."""
    return value if isinstance(value, str) else repr(value)


def csail_config_overrides(arch_encoder: str, arch_decoder: str, num_class: int) -> list[str]:
    """``cfg.merge_from_list`` arguments (``KEY VALUE`` texts) for CSAIL's
    ``MODEL.arch_encoder`` (resnet50, resnet50dilated, resnet101, resnet101dilated),
    ``MODEL.arch_decoder`` (upernet, ppm_deepsup) and ``DATASET.num_class``: the ResNet with the
    deep-base stem, the head, widths 512, pyramid bins 1, 2, 3, 6, CSAIL's input statistics
    (ImageNet mean / std of RGB 0-1 images, here on the 0-255 scale). Norms (CSAIL: synchronised
    BatchNorm) are left to the config.
    """
    encoder = _ENCODERS.get(arch_encoder.lower())
    if encoder is None:
        raise ValueError(f"CSAIL arch_encoder '{arch_encoder}' is not one of {sorted(_ENCODERS)}")
    decoder = _DECODER_OVERRIDES.get(arch_decoder.lower())
    if decoder is None:
        raise ValueError(
            f"CSAIL arch_decoder '{arch_decoder}' is not one of {sorted(_DECODER_OVERRIDES)}"
        )
    overrides = {
        "MODEL.META_ARCHITECTURE": "SemanticSegmentor",
        "MODEL.BACKBONE.NAME": "build_resnet_backbone",
        "MODEL.RESNETS.DEPTH": encoder.depth,
        "MODEL.RESNETS.STEM_TYPE": "deep_base",
        "MODEL.RESNETS.OUTPUT_STRIDE": encoder.output_stride,
        "MODEL.RESNETS.STRIDE_IN_1X1": False,
        "MODEL.RESNETS.OUT_FEATURES": ["res2", "res3", "res4", "res5"],
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES": num_class,
        "MODEL.SEM_SEG_HEAD.CONVS_DIM": 512,
        "MODEL.SEM_SEG_HEAD.POOL_SCALES": [1, 2, 3, 6],
        "MODEL.PIXEL_MEAN": [123.675, 116.28, 103.53],
        "MODEL.PIXEL_STD": [58.395, 57.12, 57.375],
        "INPUT.FORMAT": "RGB",
        **decoder,
    }
    return [item for key, value in overrides.items() for item in (key, _cfg_text(value))]
