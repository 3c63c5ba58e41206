"""Convert timm ImageNet checkpoints (and the original FB ConvNeXt / Microsoft Swin files) to the
names of this project's backbones.

The result holds timm 1.0's canonical names of the model's feature layers (``kind ==
"backbone"``), without the classifier head and the final norm:

- ``TimmBackbone`` holds the timm model as ``model``, so it takes these names under ``model.``
  (``model.stem.0.weight``, ``model.stages.1.downsample.1.weight``, ...);
- ``SwinTransformer`` uses timm's Swin names itself (``patch_embed.proj.weight``,
  ``layers.1.downsample.reduction.weight``, ``layers.0.blocks.0.attn.qkv.weight``).

Loading places them (``checkpoint.formats.place_state_dict``), so one converted file serves both.
Sources, by key names:

- ConvNeXt, timm layout (``stem.0``, ``stages.{i}.blocks.{j}.conv_dw``; ``head.norm`` and
  ``head.fc`` dropped);
- ConvNeXt V1 / V2, facebookresearch layout (``downsample_layers.{i}``, ``stages.{i}.{j}.dwconv``,
  ``pwconv1``, ``grn.gamma`` (1, 1, 1, C); ``norm`` and ``head`` dropped), renamed as timm's
  ``convnext.checkpoint_filter_fn`` does (that function is not timm's public API);
- Swin, timm 1.0 layout (patch merging at the start of stage i >= 1, ``head.fc``) or the original
  Microsoft / timm < 0.9 layout (``layers.{i}.downsample`` at the end of stage i, which is
  ``layers.{i+1}.downsample`` here; ``head``); ``relative_position_index`` and ``attn_mask``
  (buffers computed at construction), ``head.*`` and the final ``norm.*`` dropped;
- any other timm model, with ``MODEL.WEIGHTS_FORMAT timm``: names kept, the classifier and final
  norm (``head``, ``fc``, ``classifier``, ``norm``, ``fc_norm``, ``head_drop``) dropped.

A key that no rule of its family knows keeps its name: the load reports it as unused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch

from .conversion import Conversion, Rule, as_tensors, rename_keys

__all__ = ["convert_timm_state_dict", "is_timm_state_dict", "timm_family"]

_P = r"(?P<p>weight|bias)"


def _same(m: re.Match, ctx: Any) -> str:
    return m[0]


def _fmt(template: str):
    return lambda m, ctx: template.format(**m.groupdict())


# ----------------------------------------------------------------------------- families

_CONVNEXT_TIMM_RULES: list[Rule] = [
    (r"stem\.[01]\." + _P, _same),
    (r"stages\.\d+\.downsample\.[01]\." + _P, _same),
    (r"stages\.\d+\.blocks\.\d+\.(conv_dw|norm|mlp\.fc1|mlp\.fc2|mlp\.grn)\." + _P, _same),
    (r"stages\.\d+\.blocks\.\d+\.gamma", _same),
]
_CONVNEXT_TIMM_IGNORED = r"head\..*|norm_pre\..*"

_FB_BLOCK = r"stages\.(?P<i>\d+)\.(?P<j>\d+)\."
_FB_TO_TIMM = {"dwconv": "conv_dw", "norm": "norm", "pwconv1": "mlp.fc1", "pwconv2": "mlp.fc2"}
_CONVNEXT_FB_RULES: list[Rule] = [
    (r"downsample_layers\.0\.(?P<k>[01])\." + _P, _fmt("stem.{k}.{p}")),
    (
        r"downsample_layers\.(?P<i>[1-9])\.(?P<k>[01])\." + _P,
        _fmt("stages.{i}.downsample.{k}.{p}"),
    ),
    (
        _FB_BLOCK + r"(?P<layer>dwconv|norm|pwconv1|pwconv2)\." + _P,
        lambda m, ctx: f"stages.{m['i']}.blocks.{m['j']}.{_FB_TO_TIMM[m['layer']]}.{m['p']}",
    ),
    (_FB_BLOCK + r"gamma", _fmt("stages.{i}.blocks.{j}.gamma")),
    (
        _FB_BLOCK + r"grn\.(?P<g>gamma|beta)",
        lambda m, ctx: (
            f"stages.{m['i']}.blocks.{m['j']}.mlp.grn."
            + {"gamma": "weight", "beta": "bias"}[m["g"]]
        ),
    ),
]
_CONVNEXT_FB_IGNORED = r"(norm|head)\." + _P

_SWIN_BLOCK_LAYERS = r"norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2"


def _swin_downsample(m: re.Match, old_layout: bool) -> str:
    stage = int(m["i"]) + (1 if old_layout else 0)
    return f"layers.{stage}.downsample.{m['t']}"


_SWIN_RULES: list[Rule] = [
    (r"patch_embed\.(proj|norm)\." + _P, _same),
    (r"absolute_pos_embed", _same),
    (r"layers\.\d+\.blocks\.\d+\.(" + _SWIN_BLOCK_LAYERS + r")\." + _P, _same),
    (r"layers\.\d+\.blocks\.\d+\.attn\.relative_position_bias_table", _same),
    (
        r"layers\.(?P<i>\d+)\.downsample\.(?P<t>norm\.(weight|bias)|reduction\.weight)",
        _swin_downsample,
    ),
]
_SWIN_IGNORED = r".*\.relative_position_index|.*\.attn_mask|head\..*|norm\." + _P

_GENERIC_RULES: list[Rule] = [(r".+", _same)]
_GENERIC_IGNORED = r"(head|fc|classifier|head_drop|fc_norm|norm)(\..*)?"

# family -> (rules, ignored regex); a key no rule knows keeps its name (the load reports it as
# unused), so an extra tensor in a file never stops it
_FAMILIES: dict[str, tuple[list[Rule], str]] = {
    "convnext": (_CONVNEXT_TIMM_RULES + _GENERIC_RULES, _CONVNEXT_TIMM_IGNORED),
    "convnext-fb": (_CONVNEXT_FB_RULES + _GENERIC_RULES, _CONVNEXT_FB_IGNORED),
    "swin": (_SWIN_RULES + _GENERIC_RULES, _SWIN_IGNORED),
    "generic": (_GENERIC_RULES, _GENERIC_IGNORED),
}


def timm_family(keys: Iterable[str]) -> str:
    """Which layout ``keys`` follow: "convnext" (timm), "convnext-fb" (facebookresearch), "swin"
    (timm or Microsoft) or "generic" (any other timm model)."""
    keys = set(keys)
    if "stem.0.weight" in keys and any(
        re.match(r"stages\.\d+\.blocks\.\d+\.conv_dw\.", k) for k in keys
    ):
        return "convnext"
    if "downsample_layers.0.0.weight" in keys and any(
        re.match(_FB_BLOCK + "dwconv\\.", k) for k in keys
    ):
        return "convnext-fb"
    if "patch_embed.proj.weight" in keys and any(
        re.match(r"layers\.\d+\.blocks\.\d+\.attn\.qkv\.", k) for k in keys
    ):
        return "swin"
    return "generic"


def is_timm_state_dict(keys: Iterable[str]) -> bool:
    """Whether ``keys`` are a timm (or original FB / Microsoft) ConvNeXt or Swin ImageNet
    checkpoint. Other timm models are not recognised by name (their names may equal
    torchvision's): load them with ``MODEL.WEIGHTS_FORMAT timm``. This project's
    ``SwinTransformer`` (per-output ``norms.*``) is not taken for timm's."""
    keys = list(keys)
    if any(k.startswith("norms.") for k in keys):
        return False
    return timm_family(keys) != "generic"


def _grn_to_vector(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """facebookresearch ConvNeXt V2 keeps GRN parameters as (1, 1, 1, C); timm as (C,)."""
    return {k: v.reshape(-1) if ".mlp.grn." in k else v for k, v in state.items()}


def convert_timm_state_dict(state: Mapping[str, Any], *, author: str = "timm") -> Conversion:
    """Rename a timm / FB ConvNeXt / Microsoft Swin ImageNet state dict to timm 1.0's canonical
    names without classifier head and final norm (``kind == "backbone"``, see the module doc).

    Keys no rule of the family knows keep their names (a load reports them as unused).
    """
    tensors = as_tensors(state)
    family = timm_family(tensors)
    rules, ignored_regex = _FAMILIES[family]
    old_swin_layout = "layers.0.downsample.reduction.weight" in tensors
    renamed, ignored = rename_keys(tensors, rules, ignored_regex, old_swin_layout, f"timm {family}")
    converted = _grn_to_vector({new: tensors[old] for old, new in renamed.items()})
    return Conversion(converted, "backbone", "timm", author, renamed, ignored, filled=[])
