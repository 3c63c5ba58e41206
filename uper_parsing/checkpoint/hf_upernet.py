"""transformers' ``UperNetForSemanticSegmentation`` checkpoints -> this project's SemanticSegmentor.

The model hub's ``openmmlab/upernet-convnext-*`` and ``openmmlab/upernet-swin-*`` are mmseg's
ADE20K UPerNets converted by transformers; transformers also builds UperNet on its ResNet. The
names below come from transformers' ``modeling_upernet.py``, ``modeling_resnet.py``,
``modeling_convnext.py`` and ``modeling_swin.py``:

- ``decode_head`` (UperNetHead) -> ``sem_seg_head`` (UPerNetHead), ``auxiliary_head``
  (UperNetFCNHead) -> ``aux_head`` (FCNHead); each ``conv`` / ``batch_norm`` -> ``conv`` / ``norm``;
- ``ResNetBackbone`` -> ``ResNet`` (torchvision layout) under ``backbone.``;
- ``ConvNextBackbone`` -> ``TimmBackbone`` (``backbone.model.*`` timm names, ``backbone.norms.*``);
- ``SwinBackbone`` -> ``SwinTransformer``: separate query / key / value are stacked into
  ``attn.qkv``; the patch merging at the end of HF stage i is the one at the start of our stage
  i + 1 (same channel order: x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]). Both the
  hub files' names (``backbone.encoder.*``, ``attention.self.query``, ``intermediate.dense``) and
  transformers 5's (``backbone.swin.encoder.*``, ``attention.q_proj``, ``mlp.fc1``) are read.

``config_overrides_from_hf`` builds the config of the same architecture from the ``config.json``
that comes with such a checkpoint.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from .conversion import Conversion, Rule, as_tensors, rename_keys

__all__ = [
    "config_overrides_from_hf",
    "convert_hf_upernet_state_dict",
    "hf_backbone_kind",
    "is_hf_upernet_state_dict",
]

SOURCE_FORMAT = "hf-upernet"

_AFFINE = r"(?P<t>weight|bias)"
_BN = r"(?P<t>weight|bias|running_mean|running_var)"


def _fmt(template: str, **shifts: int) -> Callable[[re.Match, Any], str]:
    """A rule target: ``template`` filled with the match's named groups, the groups named in
    ``shifts`` first turned into ints and shifted (HF's stage 0 is our ``res2``: ``s=2``)."""

    def target(m: re.Match, ctx: Any) -> str:
        groups = m.groupdict()
        for name, by in shifts.items():
            groups[name] = int(groups[name]) + by
        return template.format(**groups)

    return target


def _conv_bn(
    source: str, conv: str, norm: str, *, names: tuple[str, str], **shifts: int
) -> list[Rule]:
    """Rules for a conv + BatchNorm pair: ``<source>.<names[0]>.weight`` -> ``<conv>.weight``,
    ``<source>.<names[1]>.<t>`` -> ``<norm>.<t>``."""
    conv_name, norm_name = (re.escape(n) for n in names)
    return [
        (rf"{source}\.{conv_name}\.{_AFFINE}", _fmt(conv + ".{t}", **shifts)),
        (rf"{source}\.{norm_name}\.{_BN}", _fmt(norm + ".{t}", **shifts)),
    ]


def _conv_module(source: str, target: str, **shifts: int) -> list[Rule]:
    """UperNetConvModule (``conv``, ``batch_norm``) -> ConvNormAct (``conv``, ``norm``)."""
    return _conv_bn(
        source, target + ".conv", target + ".norm", names=("conv", "batch_norm"), **shifts
    )


_HEAD_RULES: list[Rule] = [
    *_conv_module(r"decode_head\.psp_modules\.(?P<i>\d+)\.1", "sem_seg_head.ppm.branches.{i}.1"),
    *_conv_module(r"decode_head\.(?P<m>bottleneck|fpn_bottleneck)", "sem_seg_head.{m}"),
    *_conv_module(
        r"decode_head\.(?P<m>lateral_convs|fpn_convs)\.(?P<i>\d+)", "sem_seg_head.{m}.{i}"
    ),
    (rf"decode_head\.classifier\.{_AFFINE}", _fmt("sem_seg_head.predictor.{t}")),
    *_conv_module(r"auxiliary_head\.convs\.(?P<i>\d+)", "aux_head.convs.{i}"),
    (rf"auxiliary_head\.classifier\.{_AFFINE}", _fmt("aux_head.predictor.{t}")),
]

_RESNET_LAYER = ("convolution", "normalization")  # ResNetConvLayer / ResNetShortCut
_RESNET_BLOCK = r"backbone\.encoder\.stages\.(?P<s>\d+)\.layers\.(?P<b>\d+)"
_RESNET_RULES: list[Rule] = [
    *_conv_bn(
        r"backbone\.embedder\.embedder",
        "backbone.stem.conv1",
        "backbone.stem.bn1",
        names=_RESNET_LAYER,
    ),
    *_conv_bn(
        _RESNET_BLOCK + r"\.layer\.(?P<c>\d)",
        "backbone.res{s}.{b}.conv{c}",
        "backbone.res{s}.{b}.bn{c}",
        names=_RESNET_LAYER,
        s=2,
        c=1,
    ),
    *_conv_bn(
        _RESNET_BLOCK + r"\.shortcut",
        "backbone.res{s}.{b}.downsample.0",
        "backbone.res{s}.{b}.downsample.1",
        names=_RESNET_LAYER,
        s=2,
    ),
]

# Per-output LayerNorms of ConvNextBackbone / SwinBackbone: HF stage k has stride 2^(k+1)
_OUT_NORM_RULE: Rule = (
    rf"backbone\.hidden_states_norms\.stage(?P<k>\d+)\.{_AFFINE}",
    _fmt("backbone.norms.res{k}.{t}", k=1),
)

_CONVNEXT_BLOCK = r"backbone\.encoder\.stages\.(?P<i>\d+)\.layers\.(?P<j>\d+)\."
_TIMM_BLOCK = "backbone.model.stages.{i}.blocks.{j}."
_CONVNEXT_RULES: list[Rule] = [
    (rf"backbone\.embeddings\.patch_embeddings\.{_AFFINE}", _fmt("backbone.model.stem.0.{t}")),
    (rf"backbone\.embeddings\.layernorm\.{_AFFINE}", _fmt("backbone.model.stem.1.{t}")),
    (
        rf"backbone\.encoder\.stages\.(?P<i>\d+)\.downsampling_layer\.(?P<k>[01])\.{_AFFINE}",
        _fmt("backbone.model.stages.{i}.downsample.{k}.{t}"),
    ),
    (rf"{_CONVNEXT_BLOCK}dwconv\.{_AFFINE}", _fmt(_TIMM_BLOCK + "conv_dw.{t}")),
    (rf"{_CONVNEXT_BLOCK}layernorm\.{_AFFINE}", _fmt(_TIMM_BLOCK + "norm.{t}")),
    (rf"{_CONVNEXT_BLOCK}pwconv(?P<k>[12])\.{_AFFINE}", _fmt(_TIMM_BLOCK + "mlp.fc{k}.{t}")),
    (rf"{_CONVNEXT_BLOCK}layer_scale_parameter", _fmt(_TIMM_BLOCK + "gamma")),
    _OUT_NORM_RULE,
]

_SWIN = r"backbone\.(?:swin\.)?"  # transformers 5 nests the encoder under ``swin.``
_SWIN_BLOCK = _SWIN + r"encoder\.layers\.(?P<i>\d+)\.blocks\.(?P<j>\d+)\."
_OUR_BLOCK = "backbone.layers.{i}.blocks.{j}."
_SWIN_RULES: list[Rule] = [
    (
        rf"{_SWIN}embeddings\.patch_embeddings\.projection\.{_AFFINE}",
        _fmt("backbone.patch_embed.proj.{t}"),
    ),
    (rf"{_SWIN}embeddings\.norm\.{_AFFINE}", _fmt("backbone.patch_embed.norm.{t}")),
    (rf"{_SWIN}embeddings\.position_embeddings", _fmt("backbone.absolute_pos_embed")),
    (rf"{_SWIN_BLOCK}layernorm_before\.{_AFFINE}", _fmt(_OUR_BLOCK + "norm1.{t}")),
    (rf"{_SWIN_BLOCK}layernorm_after\.{_AFFINE}", _fmt(_OUR_BLOCK + "norm2.{t}")),
    (
        rf"{_SWIN_BLOCK}attention\.(?:self|relative_position_bias)\.relative_position_bias_table",
        _fmt(_OUR_BLOCK + "attn.relative_position_bias_table"),
    ),
    (
        rf"{_SWIN_BLOCK}attention\.(?:self\.(?:query|key|value)|[qkv]_proj)\.{_AFFINE}",
        _fmt(_OUR_BLOCK + "attn.qkv.{t}"),
    ),
    (
        rf"{_SWIN_BLOCK}attention\.(?:output\.dense|o_proj)\.{_AFFINE}",
        _fmt(_OUR_BLOCK + "attn.proj.{t}"),
    ),
    (
        rf"{_SWIN_BLOCK}(?:intermediate\.dense|mlp\.fc1)\.{_AFFINE}",
        _fmt(_OUR_BLOCK + "mlp.fc1.{t}"),
    ),
    (rf"{_SWIN_BLOCK}(?:output\.dense|mlp\.fc2)\.{_AFFINE}", _fmt(_OUR_BLOCK + "mlp.fc2.{t}")),
    (
        rf"{_SWIN}encoder\.layers\.(?P<i>\d+)\.downsample\.(?P<m>norm|reduction)\.{_AFFINE}",
        _fmt("backbone.layers.{i}.downsample.{m}.{t}", i=1),
    ),
    _OUT_NORM_RULE,
]

# Dropped on purpose: BatchNorm counters (no effect on the weights); Swin's relative position
# index (a constant of the window size, rebuilt by our attention) and SwinModel's final
# ``layernorm``, which SwinBackbone holds but never applies
_IGNORED = r".*\.num_batches_tracked"
_SWIN_IGNORED = _IGNORED + rf"|.*\.relative_position_index|{_SWIN}layernorm\.(?:weight|bias)"

# Backbone kind -> (regex a key of that backbone matches, renaming rules, ignored regex)
_BACKBONES: dict[str, tuple[str, list[Rule], str]] = {
    "resnet": (r"backbone\.embedder\.", _RESNET_RULES, _IGNORED),
    "convnext": (
        r"backbone\.encoder\.stages\.\d+\.layers\.\d+\.dwconv\.",
        _CONVNEXT_RULES,
        _IGNORED,
    ),
    "swin": (_SWIN + r"encoder\.layers\.\d+\.blocks\.", _SWIN_RULES, _SWIN_IGNORED),
}

# Which of query (0), key (1), value (2) a Swin attention tensor is, in either naming
_QKV_PART = re.compile(r"\.attention\.(?:self\.(query|key|value)|([qkv])_proj)\.")
_QKV_ORDER = {"query": 0, "key": 1, "value": 2, "q": 0, "k": 1, "v": 2}


def is_hf_upernet_state_dict(keys: Iterable[str]) -> bool:
    """Whether ``keys`` are transformers' UperNet names (``decode_head.classifier``,
    ``decode_head.*.batch_norm``), unlike mmseg's (``decode_head.conv_seg``, ``*.bn``)."""
    marker = re.compile(r"decode_head\.(?:classifier|.+\.batch_norm)\.")
    return any(marker.match(k) for k in keys)


def hf_backbone_kind(keys: Iterable[str]) -> str:
    """The transformers backbone whose names ``keys`` use: "resnet", "convnext" or "swin"."""
    keys = list(keys)
    for kind, (marker, _, _) in _BACKBONES.items():
        if any(re.match(marker, k) for k in keys):
            return kind
    backbone = sorted(k for k in keys if k.startswith("backbone."))[:5]
    raise ValueError(
        f"no transformers ResNet / ConvNeXt / Swin backbone among the keys (first backbone keys: "
        f"{backbone or 'none'})"
    )


def _qkv_part(key: str) -> int:
    m = _QKV_PART.search(key)
    return _QKV_ORDER[m.group(1) or m.group(2)]


def _assemble(
    tensors: Mapping[str, torch.Tensor], renamed: Mapping[str, str]
) -> dict[str, torch.Tensor]:
    """Our state dict from the renaming: one source per key, except Swin's ``attn.qkv.*``
    stacked from query, key, value (each (C, C) / (C,)) into (3C, C) / (3C,)."""
    sources: dict[str, list[str]] = {}
    for source, target in renamed.items():
        sources.setdefault(target, []).append(source)
    state = {}
    for target, names in sources.items():
        if ".attn.qkv." in target:
            parts = sorted(names, key=_qkv_part)
            if [_qkv_part(n) for n in parts] != [0, 1, 2]:
                raise ValueError(f"{target} needs one query, key and value tensor, got {parts}")
            state[target] = torch.cat([tensors[n] for n in parts])
        elif len(names) > 1:
            raise ValueError(f"{target} would be filled by several keys: {sorted(names)}")
        else:
            state[target] = tensors[names[0]]
    return state


def convert_hf_upernet_state_dict(
    state: Mapping[str, Any], *, author: str = "transformers"
) -> Conversion:
    """Rename a transformers ``UperNetForSemanticSegmentation`` state dict (ResNet, ConvNeXt or
    Swin backbone; auxiliary head optional) to a SemanticSegmentor's names (``kind == "model"``).

    Shapes are kept, except Swin's query / key / value weights (C, C) and biases (C,), which are
    stacked in that order into ``attn.qkv`` (3C, C) / (3C,). Build the model with
    ``config_overrides_from_hf`` of the checkpoint's ``config.json``.

    Raises:
        ValueError naming the keys that are neither mappable nor safe to drop.
    """
    tensors = as_tensors(state)
    _, backbone_rules, ignored = _BACKBONES[hf_backbone_kind(tensors)]
    renamed, dropped = rename_keys(
        tensors, _HEAD_RULES + backbone_rules, ignored, None, "transformers UperNet"
    )
    converted = _assemble(tensors, renamed)
    return Conversion(converted, "model", SOURCE_FORMAT, author, renamed, dropped, filled=[])


# ----------------------------------------------------------------------------- configs

# Values transformers assumes for keys a config.json leaves out (save_pretrained writes only
# those that differ from these), from its configuration_*.py
_UPERNET_DEFAULTS: dict[str, Any] = {
    "hidden_size": 512,
    "pool_scales": [1, 2, 3, 6],
    "use_auxiliary_head": True,
    "auxiliary_loss_weight": 0.4,
    "auxiliary_in_channels": None,
    "auxiliary_channels": 256,
    "auxiliary_num_convs": 1,
    "auxiliary_concat_input": False,
    "loss_ignore_index": 255,
}
_DEFAULT_BACKBONE = {
    "model_type": "resnet",
    "out_features": ["stage1", "stage2", "stage3", "stage4"],
}
_BACKBONE_DEFAULTS: dict[str, dict[str, Any]] = {
    "resnet": {
        "num_channels": 3,
        "embedding_size": 64,
        "hidden_sizes": [256, 512, 1024, 2048],
        "depths": [3, 4, 6, 3],
        "layer_type": "bottleneck",
        "hidden_act": "relu",
        "downsample_in_first_stage": False,
        "downsample_in_bottleneck": False,
    },
    "convnext": {
        "num_channels": 3,
        "patch_size": 4,
        "num_stages": 4,
        "hidden_sizes": [96, 192, 384, 768],
        "depths": [3, 3, 9, 3],
        "hidden_act": "gelu",
        "layer_scale_init_value": 1e-6,
        "drop_path_rate": 0.0,
    },
    "swin": {
        "num_channels": 3,
        "patch_size": 4,
        "embed_dim": 96,
        "depths": [2, 2, 6, 2],
        "num_heads": [3, 6, 12, 24],
        "window_size": 7,
        "mlp_ratio": 4.0,
        "qkv_bias": True,
        "drop_path_rate": 0.1,
        "hidden_act": "gelu",
        "use_absolute_embeddings": False,
        "layer_norm_eps": 1e-5,
        "image_size": 224,
    },
}
_SWIN_APE_IMAGE_SIZE = 224  # SwinTransformer's pretrain_img_size (no config key)

# (layer_type, depths) -> our MODEL.RESNETS.DEPTH, and the widths torchvision gives that depth
_RESNET_DEPTHS = {
    ("basic", (2, 2, 2, 2)): 18,
    ("basic", (3, 4, 6, 3)): 34,
    ("bottleneck", (3, 4, 6, 3)): 50,
    ("bottleneck", (3, 4, 23, 3)): 101,
}
_RESNET_WIDTHS = {"basic": [64, 128, 256, 512], "bottleneck": [256, 512, 1024, 2048]}

# (hidden_sizes, depths) -> timm's ConvNeXt of that shape (the published UperNets' backbones)
_TIMM_CONVNEXTS = {
    ((96, 192, 384, 768), (3, 3, 9, 3)): "convnext_tiny",
    ((96, 192, 384, 768), (3, 3, 27, 3)): "convnext_small",
    ((128, 256, 512, 1024), (3, 3, 27, 3)): "convnext_base",
    ((192, 384, 768, 1536), (3, 3, 27, 3)): "convnext_large",
    ((256, 512, 1024, 2048), (3, 3, 27, 3)): "convnext_xlarge",
}

_AUX_IN_INDEX = 2  # UperNetFCNHead reads the third backbone feature map


def _require(cond: bool, what: str, value: Any, why: str) -> None:
    if not cond:
        raise ValueError(f"transformers config {what}={value!r}: {why}")


def _out_features(backbone: Mapping[str, Any]) -> list[str]:
    """The backbone's feature maps as our names (HF ``stage{k}`` -> ``res{k+1}``), in HF's order;
    without out_features / out_indices HF returns the last stage only."""
    stages = ["stem"] + [f"stage{k}" for k in range(1, len(backbone["depths"]) + 1)]
    names = backbone.get("out_features") or [stages[i] for i in backbone.get("out_indices") or []]
    names = names or stages[-1:]
    _require("stem" not in names, "backbone_config.out_features", names, "the stem is no output")
    return [f"res{int(name[len('stage') :]) + 1}" for name in names]


def _resnet_overrides(backbone: Mapping[str, Any], out_features: list[str]) -> dict[str, Any]:
    layer, depths = backbone["layer_type"], tuple(backbone["depths"])
    depth = _RESNET_DEPTHS.get((layer, depths))
    known = ", ".join(f"{d} ({t}, {list(s)})" for (t, s), d in _RESNET_DEPTHS.items())
    _require(depth is not None, "backbone_config.depths", list(depths), f"ours are {known}")
    widths, stem = list(backbone["hidden_sizes"]), backbone["embedding_size"]
    expected = _RESNET_WIDTHS[layer]
    _require(widths == expected, "backbone_config.hidden_sizes", widths, f"R-{depth}: {expected}")
    _require(stem == 64, "backbone_config.embedding_size", stem, "torchvision's stem has 64")
    act, first = backbone["hidden_act"], backbone["downsample_in_first_stage"]
    _require(act == "relu", "backbone_config.hidden_act", act, "torchvision's ResNet uses relu")
    _require(not first, "backbone_config.downsample_in_first_stage", first, "res2 has stride 1")
    return {
        "MODEL.BACKBONE.NAME": "build_resnet_backbone",
        "MODEL.RESNETS.DEPTH": depth,
        "MODEL.RESNETS.NORM": "BN",
        "MODEL.RESNETS.STEM_TYPE": "basic",
        "MODEL.RESNETS.OUTPUT_STRIDE": 32,
        "MODEL.RESNETS.STRIDE_IN_1X1": bool(backbone["downsample_in_bottleneck"]),
        "MODEL.RESNETS.OUT_FEATURES": out_features,
    }


def _convnext_overrides(backbone: Mapping[str, Any], out_features: list[str]) -> dict[str, Any]:
    shape = (tuple(backbone["hidden_sizes"]), tuple(backbone["depths"]))
    name = _TIMM_CONVNEXTS.get(shape)
    known = ", ".join(f"{n} {[list(x) for x in s]}" for s, n in _TIMM_CONVNEXTS.items())
    _require(name is not None, "backbone_config [hidden_sizes, depths]", shape, f"timm: {known}")
    patch, act = backbone["patch_size"], backbone["hidden_act"]
    _require(patch == 4, "backbone_config.patch_size", patch, "timm's ConvNeXt stem is 4x4")
    _require(act == "gelu", "backbone_config.hidden_act", act, "timm's ConvNeXt uses gelu")
    scale = backbone["layer_scale_init_value"]
    _require(scale > 0, "backbone_config.layer_scale_init_value", scale, "timm's has layer scale")
    return {
        "MODEL.BACKBONE.NAME": "build_timm_backbone",
        "MODEL.TIMM.NAME": name,
        "MODEL.TIMM.OUT_INDICES": [int(f[len("res") :]) - 2 for f in out_features],
        "MODEL.TIMM.DROP_PATH_RATE": float(backbone["drop_path_rate"]),
        "MODEL.TIMM.OUT_NORM": "LN",
    }


def _swin_overrides(backbone: Mapping[str, Any], out_features: list[str]) -> dict[str, Any]:
    act, eps = backbone["hidden_act"], backbone["layer_norm_eps"]
    _require(act == "gelu", "backbone_config.hidden_act", act, "our Swin uses gelu")
    _require(eps == 1e-5, "backbone_config.layer_norm_eps", eps, "our Swin's LayerNorms use 1e-5")
    patch = backbone["patch_size"]
    _require(patch == 4, "backbone_config.patch_size", patch, "HF stage k must be our res<k+1>")
    image = backbone["image_size"]
    _require(
        not backbone["use_absolute_embeddings"] or image == _SWIN_APE_IMAGE_SIZE,
        "backbone_config.image_size",
        image,
        f"our Swin's position embedding is sized for {_SWIN_APE_IMAGE_SIZE}-pixel squares",
    )
    return {
        "MODEL.BACKBONE.NAME": "build_swin_backbone",
        "MODEL.SWIN.PATCH_SIZE": int(backbone["patch_size"]),
        "MODEL.SWIN.EMBED_DIM": int(backbone["embed_dim"]),
        "MODEL.SWIN.DEPTHS": list(backbone["depths"]),
        "MODEL.SWIN.NUM_HEADS": list(backbone["num_heads"]),
        "MODEL.SWIN.WINDOW_SIZE": int(backbone["window_size"]),
        "MODEL.SWIN.MLP_RATIO": float(backbone["mlp_ratio"]),
        "MODEL.SWIN.QKV_BIAS": bool(backbone["qkv_bias"]),
        "MODEL.SWIN.DROP_PATH_RATE": float(backbone["drop_path_rate"]),
        "MODEL.SWIN.APE": bool(backbone["use_absolute_embeddings"]),
        "MODEL.SWIN.PATCH_NORM": True,
        "MODEL.SWIN.OUT_FEATURES": out_features,
    }


_BACKBONE_OVERRIDES: dict[str, Callable[[Mapping[str, Any], list[str]], dict[str, Any]]] = {
    "resnet": _resnet_overrides,
    "convnext": _convnext_overrides,
    "swin": _swin_overrides,
}


def _backbone_config(hf_config: Mapping[str, Any]) -> dict[str, Any]:
    """``backbone_config`` with transformers' defaults filled in."""
    _require(
        not hf_config.get("use_timm_backbone") and not hf_config.get("backbone"),
        "backbone",
        hf_config.get("backbone"),
        "only a backbone_config (transformers' own ResNet / ConvNeXt / Swin) is supported",
    )
    backbone = dict(hf_config.get("backbone_config") or _DEFAULT_BACKBONE)
    kind = backbone.get("model_type")
    _require(
        kind in _BACKBONES, "backbone_config.model_type", kind, f"not one of {list(_BACKBONES)}"
    )
    channels = backbone.get("num_channels", 3)
    _require(channels == 3, "backbone_config.num_channels", channels, "images have 3 channels")
    return {**_BACKBONE_DEFAULTS[kind], **backbone}


def _num_labels(hf_config: Mapping[str, Any]) -> int:
    if hf_config.get("num_labels") is not None:
        return int(hf_config["num_labels"])
    return len(hf_config.get("id2label") or {0: "LABEL_0", 1: "LABEL_1"})  # HF's default: 2


def _head_overrides(
    upernet: Mapping[str, Any], channels: Mapping[str, int], out_features: list[str]
) -> dict[str, Any]:
    overrides = {
        "MODEL.META_ARCHITECTURE": "SemanticSegmentor",
        "MODEL.SEM_SEG_HEAD.NAME": "UPerNetHead",
        "MODEL.SEM_SEG_HEAD.IN_FEATURES": out_features,
        "MODEL.SEM_SEG_HEAD.NUM_CLASSES": _num_labels(upernet),
        "MODEL.SEM_SEG_HEAD.IGNORE_VALUE": int(upernet["loss_ignore_index"]),
        "MODEL.SEM_SEG_HEAD.CONVS_DIM": int(upernet["hidden_size"]),
        "MODEL.SEM_SEG_HEAD.POOL_SCALES": list(upernet["pool_scales"]),
        "MODEL.SEM_SEG_HEAD.NORM": "BN",
        "MODEL.AUX_HEAD.ENABLED": bool(upernet["use_auxiliary_head"]),
    }
    if not upernet["use_auxiliary_head"]:
        return overrides
    _require(len(out_features) > _AUX_IN_INDEX, "out_features", out_features, "aux head reads #3")
    concat = upernet["auxiliary_concat_input"]
    _require(not concat, "auxiliary_concat_input", concat, "FCNHead has no concat-input conv")
    aux_feature = out_features[_AUX_IN_INDEX]
    aux_in = upernet["auxiliary_in_channels"]
    _require(
        aux_in in (None, channels[aux_feature]),
        "auxiliary_in_channels",
        aux_in,
        f"the auxiliary head reads {aux_feature} with {channels[aux_feature]} channels",
    )
    return {
        **overrides,
        "MODEL.AUX_HEAD.NAME": "FCNHead",
        "MODEL.AUX_HEAD.IN_FEATURES": [aux_feature],
        "MODEL.AUX_HEAD.CONVS_DIM": int(upernet["auxiliary_channels"]),
        "MODEL.AUX_HEAD.NUM_CONVS": int(upernet["auxiliary_num_convs"]),
        "MODEL.AUX_HEAD.LOSS_WEIGHT": float(upernet["auxiliary_loss_weight"]),
    }


def _feature_channels(kind: str, backbone: Mapping[str, Any]) -> dict[str, int]:
    """Channels of each stage output (``res2``..), as HF's backbone reports them."""
    if kind == "swin":
        widths = [backbone["embed_dim"] * 2**i for i in range(len(backbone["depths"]))]
    else:
        widths = list(backbone["hidden_sizes"])
    return {f"res{i + 2}": int(c) for i, c in enumerate(widths)}


def config_overrides_from_hf(hf_config: Mapping[str, Any]) -> list[str]:
    """``KEY VALUE`` overrides (for ``cfg.merge_from_list``) that build the SemanticSegmentor of
    the same architecture as a transformers UperNet, from its ``config.json`` (a dict, e.g.
    ``json.load`` of the file or ``model.config.to_dict()``); keys the file leaves out take
    transformers' defaults.

    Sets the backbone (ResNet: depth, stride placement; ConvNeXt: the timm model of those widths
    and depths, per-output LayerNorms; Swin: widths, depths, heads, window, MLP ratio, qkv bias,
    position embedding), the UPerNet head (classes, channels, pool scales, ignore value) and the
    auxiliary FCN head (on the third feature map: channels, convs, loss weight). Pixel mean / std
    stay at this project's defaults, which equal the image processor's ImageNet statistics.

    Raises:
        ValueError naming the config entry that has no counterpart here.
    """
    upernet = {**_UPERNET_DEFAULTS, **hf_config}
    backbone = _backbone_config(hf_config)
    kind = backbone["model_type"]
    out_features = _out_features(backbone)
    overrides = {
        **_BACKBONE_OVERRIDES[kind](backbone, out_features),
        **_head_overrides(upernet, _feature_channels(kind, backbone), out_features),
    }
    return [item for key, value in overrides.items() for item in (key, _cfg_text(value))]


def _cfg_text(value: Any) -> str:
    """A value as ``merge_from_list`` reads it: names as they are, the rest as literals."""
    return value if isinstance(value, str) else repr(value)
