"""Convert mmsegmentation checkpoints, and the ImageNet backbones its configs load, to this
project's names.

Sources, with the mmseg 1.x / mmcv 2.x / mmpretrain 1.x module names they hold:

- whole segmentors (``EncoderDecoder``: ``backbone.*``, ``neck.*``, ``decode_head.*``,
  ``auxiliary_head.*``) with a UPerHead, PSPHead or FPN neck + FPNHead, an FCNHead auxiliary
  head, on ResNetV1c, mmpretrain's ConvNeXt or mmseg's Swin -> a SemanticSegmentor
  (``kind == "model"``). Every mmcv ``ConvModule`` (``conv``, ``bn`` / ``gn``) becomes a
  ``ConvNormAct`` (``conv``, ``norm``); ``conv_seg`` becomes ``predictor``; the FPN neck's
  ``lateral_convs`` / ``fpn_convs`` become ``backbone.lateral_convs`` / ``output_convs``;
  FPNHead's ``scale_heads.{i}.{j}`` (convs at even positions between parameterless Upsample
  modules, as in detectron2's semantic FPN head) become ``scale_heads.{i}.{j // 2}`` through the
  detectron2 converter;
- ResNetV1c ImageNet weights (``open-mmlab://resnet50_v1c``: ``stem.*``, ``layer1.*`` .. without
  a ``backbone.`` prefix) -> ``ResNet`` (``kind == "resnet"``);
- mmpretrain ConvNeXt classifiers (``backbone.downsample_layers.*``, ``head.fc.*``) and mmseg's
  converted Swin ImageNet files (``patch_embed.projection.*``, ``stages.*``) -> ``TimmBackbone`` /
  ``SwinTransformer`` (``kind == "backbone"``, the names of that backbone module).

Backbones:

- ResNetV1c: deep stem ``stem.{0,1,3,4,6,7}`` -> ``stem.conv{1,2,3}`` / ``stem.bn{1,2,3}``,
  ``layer{1..4}`` -> ``res2..res5`` (blocks already in torchvision's layout). The model needs
  ``MODEL.RESNETS.STEM_TYPE "deep"``; under an FPN neck the ResNet is ``backbone.bottom_up``.
- ConvNeXt: ``downsample_layers.0`` -> timm's ``stem``, ``downsample_layers.{i}`` ->
  ``stages.{i}.downsample``, ``stages.{i}.{j}.depthwise_conv / norm / pointwise_conv1 /
  pointwise_conv2 / gamma`` -> ``stages.{i}.blocks.{j}.conv_dw / norm / mlp.fc1 / mlp.fc2 /
  gamma`` under ``backbone.model.``; the output norms ``norm{i}`` -> ``backbone.norms.res{i+2}``
  (``MODEL.TIMM.OUT_NORM "LN"``).
- Swin: ``patch_embed.projection`` -> ``patch_embed.proj``, ``stages.{i}.blocks.{j}.attn.w_msa.*``
  -> ``layers.{i}.blocks.{j}.attn.*``, ``ffn.layers.0.0`` / ``ffn.layers.1`` -> ``mlp.fc1`` /
  ``mlp.fc2``, ``norm{i}`` -> ``norms.res{i+2}``. mmseg merges patches at the end of stage i
  (``stages.{i}.downsample``), this project at the start of stage i + 1
  (``layers.{i+1}.downsample``); mmseg gathers the 2x2 patches with ``nn.Unfold`` (4C channels
  channel-major: c * 4 + kernel position, positions (0,0), (0,1), (1,0), (1,1)) where ours are
  block-major (x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2], each C channels), so
  the reduction's input columns and the norm's weight and bias are permuted (the inverse of
  mmseg's ``tools/model_converters/swin2mmseg.py``).

Dropped on purpose: BatchNorm counters, Swin's ``relative_position_index`` and ``attn_mask``
(constants our attention rebuilds), and in ImageNet files the classifier (``fc.*``, ``head.*``)
and the official Swin's final ``norm.*``, which mmseg's SwinTransformer does not load either.
mmpretrain's ConvNeXt ``norm3`` is kept: mmseg loads it as the last output norm.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from .conversion import Conversion, Rule, as_tensors, rename_keys
from .detectron2 import convert_detectron2_state_dict

__all__ = ["convert_mmseg_state_dict", "is_mmseg_state_dict", "mmseg_backbone_family"]

SOURCE_FORMAT = "mmseg"

_AFFINE = r"(?P<p>weight|bias)"
_BN = r"(?P<p>weight|bias|running_mean|running_var)"
# An mmcv ConvModule's tensors: conv, then its norm named by mmcv's build_norm_layer ("bn" for
# BN / SyncBN, "gn" for GN)
_CONV_MODULE = r"(?P<layer>conv|bn|gn)\.(?P<p>weight|bias|running_mean|running_var)"

# Any key of an mmseg / mmpretrain checkpoint or backbone, by family (with or without "backbone.")
_MARKER = re.compile(
    r"(decode_head|auxiliary_head)\.conv_seg\."
    r"|(backbone\.)?(stem\.1\.running_mean$|stages\.\d+\.\d+\.depthwise_conv\."
    r"|patch_embed\.projection\.|stages\.\d+\.blocks\.\d+\.attn\.w_msa\.)"
)


@dataclasses.dataclass(frozen=True)
class _Context:
    """Where the backbone's tensors go: ``prefix`` + its own module names."""

    prefix: str


def _fmt(template: str, **shifts: int) -> Callable[[re.Match, _Context], str]:
    """A rule target: ``{prefix}`` + ``template`` filled with the match's named groups, those in
    ``shifts`` turned into ints and shifted (mmseg's ``layer1`` is our ``res2``: ``s=1``)."""

    def target(m: re.Match, ctx: _Context) -> str:
        groups = m.groupdict()
        for name, by in shifts.items():
            groups[name] = int(groups[name]) + by
        return template.format(prefix=ctx.prefix, **groups)

    return target


def _conv_module(template: str) -> Callable[[re.Match, _Context], str]:
    """ConvModule ``conv`` / ``bn`` / ``gn`` -> ConvNormAct ``conv`` / ``norm`` under
    ``template`` (filled with the match's groups)."""

    def target(m: re.Match, ctx: _Context) -> str:
        layer = "conv" if m["layer"] == "conv" else "norm"
        return f"{template.format(**m.groupdict())}.{layer}.{m['p']}"

    return target


# ----------------------------------------------------------------------------- backbones

# ResNetV1c's deep stem, an nn.Sequential of conv, BN, ReLU three times
_V1C_STEM = {"0": "conv1", "1": "bn1", "3": "conv2", "4": "bn2", "6": "conv3", "7": "bn3"}


def _v1c_stem(m: re.Match, ctx: _Context) -> str:
    if m["i"] not in _V1C_STEM:
        raise ValueError(f"{m[0]}: ResNetV1c's stem has no parameters at position {m['i']}")
    return f"{ctx.prefix}stem.{_V1C_STEM[m['i']]}.{m['p']}"


def _resnet_rules(source: str) -> list[Rule]:
    """ResNetV1c (``source`` + ``stem.*``, ``layer{1..4}.*``) -> ``ResNet``."""
    block = r"(?P<b>\d+\.(?:conv[123]|bn[123]|downsample\.[01]))"
    return [
        (rf"{source}stem\.(?P<i>\d)\.{_BN}", _v1c_stem),
        (rf"{source}layer(?P<s>[1-4])\.{block}\.{_BN}", _fmt("{prefix}res{s}.{b}.{p}", s=1)),
    ]


_CONVNEXT_BLOCK = {
    "depthwise_conv": "conv_dw",
    "norm": "norm",
    "pointwise_conv1": "mlp.fc1",
    "pointwise_conv2": "mlp.fc2",
}


def _convnext_block(m: re.Match, ctx: _Context) -> str:
    layer = _CONVNEXT_BLOCK[m["layer"]]
    return f"{ctx.prefix}model.stages.{m['i']}.blocks.{m['j']}.{layer}.{m['p']}"


def _convnext_rules(source: str) -> list[Rule]:
    """mmpretrain ConvNeXt (``source`` + ``downsample_layers``, ``stages``, ``norm{i}``) ->
    ``TimmBackbone`` (timm's names under ``model.``, output norms ``norms.res{i+2}``)."""
    layers = "|".join(_CONVNEXT_BLOCK)
    return [
        (
            rf"{source}downsample_layers\.0\.(?P<k>[01])\.{_AFFINE}",
            _fmt("{prefix}model.stem.{k}.{p}"),
        ),
        (
            rf"{source}downsample_layers\.(?P<i>[1-9])\.(?P<k>[01])\.{_AFFINE}",
            _fmt("{prefix}model.stages.{i}.downsample.{k}.{p}"),
        ),
        (
            rf"{source}stages\.(?P<i>\d+)\.(?P<j>\d+)\.(?P<layer>{layers})\.{_AFFINE}",
            _convnext_block,
        ),
        (
            rf"{source}stages\.(?P<i>\d+)\.(?P<j>\d+)\.gamma",
            _fmt("{prefix}model.stages.{i}.blocks.{j}.gamma"),
        ),
        (rf"{source}norm(?P<i>\d)\.{_AFFINE}", _fmt("{prefix}norms.res{i}.{p}", i=2)),
    ]


def _swin_rules(source: str) -> list[Rule]:
    """mmseg SwinTransformer (``source`` + ``patch_embed``, ``stages``, ``norm{i}``) -> our
    ``SwinTransformer`` (timm 1.0's names, output norms ``norms.res{i+2}``)."""
    block = rf"{source}stages\.(?P<i>\d+)\.blocks\.(?P<j>\d+)\."
    ours = "{prefix}layers.{i}.blocks.{j}."
    return [
        (rf"{source}patch_embed\.projection\.{_AFFINE}", _fmt("{prefix}patch_embed.proj.{p}")),
        (rf"{source}patch_embed\.norm\.{_AFFINE}", _fmt("{prefix}patch_embed.norm.{p}")),
        (rf"{source}absolute_pos_embed", _fmt("{prefix}absolute_pos_embed")),
        (rf"{block}(?P<n>norm[12])\.{_AFFINE}", _fmt(ours + "{n}.{p}")),
        (rf"{block}attn\.w_msa\.(?P<n>qkv|proj)\.{_AFFINE}", _fmt(ours + "attn.{n}.{p}")),
        (
            rf"{block}attn\.w_msa\.relative_position_bias_table",
            _fmt(ours + "attn.relative_position_bias_table"),
        ),
        (rf"{block}ffn\.layers\.0\.0\.{_AFFINE}", _fmt(ours + "mlp.fc1.{p}")),
        (rf"{block}ffn\.layers\.1\.{_AFFINE}", _fmt(ours + "mlp.fc2.{p}")),
        (
            rf"{source}stages\.(?P<i>\d+)\.downsample\.(?P<n>norm|reduction)\.{_AFFINE}",
            _fmt("{prefix}layers.{i}.downsample.{n}.{p}", i=1),
        ),
        (rf"{source}norm(?P<i>\d)\.{_AFFINE}", _fmt("{prefix}norms.res{i}.{p}", i=2)),
    ]


@dataclasses.dataclass(frozen=True)
class _Family:
    """One backbone family: a regex its keys match (without ``backbone.``), its renaming rules
    (given the source prefix), where it sits in a model with an FPN neck (None: this project has
    no FPN over it), and the kind of a bare ImageNet file."""

    marker: str
    rules: Callable[[str], list[Rule]]
    under_neck: str | None
    bare_kind: str


_FAMILIES: dict[str, _Family] = {
    "resnet": _Family(
        r"stem\.1\.running_mean$|layer1\.", _resnet_rules, "backbone.bottom_up.", "resnet"
    ),
    "convnext": _Family(r"downsample_layers\.\d", _convnext_rules, None, "backbone"),
    "swin": _Family(
        r"patch_embed\.projection\.|stages\.\d+\.blocks\.", _swin_rules, None, "backbone"
    ),
}

# ----------------------------------------------------------------------------- heads and neck


def _sem_seg_branch(m: re.Match, ctx: _Context) -> str:
    """FPNHead ``scale_heads.{i}.{j}`` -> detectron2's ``sem_seg_head.p{i+2}.{j}``: both put
    parameterless Upsample modules between the convs, and the detectron2 converter finishes the
    renaming (``_finish_detectron2_names``)."""
    tensor = m["p"] if m["layer"] == "conv" else f"norm.{m['p']}"
    return f"sem_seg_head.p{int(m['i']) + 2}.{m['j']}.{tensor}"


_HEAD_RULES: list[Rule] = [
    (
        rf"decode_head\.psp_modules\.(?P<i>\d+)\.1\.{_CONV_MODULE}",
        _conv_module("sem_seg_head.ppm.branches.{i}.1"),
    ),
    (
        rf"decode_head\.(?P<m>bottleneck|fpn_bottleneck)\.{_CONV_MODULE}",
        _conv_module("sem_seg_head.{m}"),
    ),
    (
        rf"decode_head\.(?P<m>lateral_convs|fpn_convs)\.(?P<i>\d+)\.{_CONV_MODULE}",
        _conv_module("sem_seg_head.{m}.{i}"),
    ),
    (rf"decode_head\.scale_heads\.(?P<i>\d+)\.(?P<j>\d+)\.{_CONV_MODULE}", _sem_seg_branch),
    (rf"decode_head\.conv_seg\.{_AFFINE}", _fmt("sem_seg_head.predictor.{p}")),
    (rf"auxiliary_head\.convs\.(?P<i>\d+)\.{_CONV_MODULE}", _conv_module("aux_head.convs.{i}")),
    (rf"auxiliary_head\.conv_seg\.{_AFFINE}", _fmt("aux_head.predictor.{p}")),
    (
        rf"neck\.lateral_convs\.(?P<i>\d+)\.{_CONV_MODULE}",
        _conv_module("backbone.lateral_convs.{i}"),
    ),
    (rf"neck\.fpn_convs\.(?P<i>\d+)\.{_CONV_MODULE}", _conv_module("backbone.output_convs.{i}")),
]

# Dropped on purpose, everywhere: BatchNorm counters, Swin's constant buffers
_IGNORED = r".*\.num_batches_tracked|.*\.relative_position_index|.*\.attn_mask"
# ... and in ImageNet files: the classifiers (ResNetV1c ``fc``, mmpretrain / official ``head``)
# and the official Swin's final norm, which mmseg's SwinTransformer does not load
_IMAGENET_IGNORED = _IGNORED + r"|fc\.(?:weight|bias)|head\..*|norm\.(?:weight|bias)"

_DETECTRON2_SEM_SEG = re.compile(r"sem_seg_head\.p\d\.")


def _finish_detectron2_names(
    renamed: dict[str, str], tensors: Mapping[str, torch.Tensor]
) -> dict[str, str]:
    """Keys renamed to detectron2's semantic-branch names go through the detectron2 converter
    (``sem_seg_head.p{l}.{j}`` -> ``sem_seg_head.scale_heads.{l-2}.{j//2}``)."""
    pending = {src: dst for src, dst in renamed.items() if _DETECTRON2_SEM_SEG.match(dst)}
    if not pending:
        return renamed
    detectron2 = convert_detectron2_state_dict({dst: tensors[src] for src, dst in pending.items()})
    return {**renamed, **{src: detectron2.renamed[dst] for src, dst in pending.items()}}


# ----------------------------------------------------------------------------- layouts

_UNFOLD_TO_BLOCK = [0, 2, 1, 3]  # our block b holds mmseg's kernel position _UNFOLD_TO_BLOCK[b]
_PATCH_MERGING = re.compile(
    r".*stages\.\d+\.downsample\.(?:reduction\.weight|norm\.(?:weight|bias))"
)


def _unfold_to_block_order(t: torch.Tensor) -> torch.Tensor:
    """(..., 4C) in nn.Unfold's order (c * 4 + kernel position) -> (..., 4C) block-major: block b
    of C channels is kernel position ``_UNFOLD_TO_BLOCK[b]``, i.e. (0,0), (1,0), (0,1), (1,1)."""
    *lead, four_c = t.shape
    per_channel = t.reshape(*lead, four_c // 4, 4).transpose(-1, -2)  # (..., 4, C)
    return per_channel[..., _UNFOLD_TO_BLOCK, :].reshape(*lead, four_c).contiguous()


def _apply_layouts(
    tensors: Mapping[str, torch.Tensor], renamed: Mapping[str, str]
) -> dict[str, torch.Tensor]:
    return {
        dst: _unfold_to_block_order(tensors[src]) if _PATCH_MERGING.fullmatch(src) else tensors[src]
        for src, dst in renamed.items()
    }


# ----------------------------------------------------------------------------- conversion


def is_mmseg_state_dict(keys: Iterable[str]) -> bool:
    """Whether ``keys`` use mmseg / mmpretrain names: a segmentor's ``conv_seg``, ResNetV1c's
    Sequential stem (``stem.1.running_mean``), mmpretrain ConvNeXt's ``downsample_layers``, mmseg
    Swin's ``patch_embed.projection`` / ``attn.w_msa`` (each with or without ``backbone.``)."""
    return any(_MARKER.match(k) for k in keys)


def mmseg_backbone_family(keys: Iterable[str]) -> str:
    """The backbone whose mmseg names ``keys`` use: "resnet", "convnext" or "swin"."""
    names = [k[len("backbone.") :] if k.startswith("backbone.") else k for k in keys]
    for family, spec in _FAMILIES.items():
        if any(re.match(spec.marker, k) for k in names):
            return family
    raise ValueError(
        f"no mmseg ResNetV1c / ConvNeXt / Swin backbone among the keys (first keys: "
        f"{sorted(names)[:5]})"
    )


def _plan(keys: list[str]) -> tuple[str, list[Rule], str, _Context]:
    """(kind, rules, ignored regex, context) for the keys of a segmentor or a bare backbone."""
    name = mmseg_backbone_family(keys)
    family = _FAMILIES[name]
    if any(k.startswith("decode_head.") for k in keys):
        prefix = "backbone."
        if any(k.startswith("neck.") for k in keys):
            if family.under_neck is None:
                raise ValueError(f"an FPN neck over a {name} backbone has no counterpart here")
            prefix = family.under_neck
        return "model", family.rules(r"backbone\.") + _HEAD_RULES, _IGNORED, _Context(prefix)
    source = r"backbone\." if any(k.startswith("backbone.") for k in keys) else ""
    return family.bare_kind, family.rules(source), _IMAGENET_IGNORED, _Context("")


def convert_mmseg_state_dict(state: Mapping[str, Any], *, author: str = "mmseg") -> Conversion:
    """Rename an mmseg segmentor's state dict (``kind == "model"``) or an ImageNet backbone as
    mmseg's configs load it (``kind == "resnet"`` / ``"backbone"``) to this project's names.

    Args:
        state: mmseg name -> Tensor / ndarray (a checkpoint's ``state_dict``). Shapes are kept,
            except the order of the 4C patch-merging channels of Swin (see the module docstring).
    Raises:
        ValueError naming the keys that are neither mappable nor safe to drop.
    """
    tensors = as_tensors(state)
    keys = list(tensors)
    kind, rules, ignored, ctx = _plan(keys)
    renamed, dropped = rename_keys(keys, rules, ignored, ctx, "mmseg")
    renamed = _finish_detectron2_names(renamed, tensors)
    converted = _apply_layouts(tensors, renamed)
    return Conversion(converted, kind, SOURCE_FORMAT, author, renamed, dropped, filled=[])
