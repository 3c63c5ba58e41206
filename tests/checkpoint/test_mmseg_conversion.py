"""mmsegmentation checkpoints -> this project: mmseg's real checkpoint layouts fill our models.

mmseg 1.x needs mmcv < 2.2, which cannot be built here, so mmseg's checkpoint layouts are
generated below from a compact description of its modules, written from mmseg 1.2.2's source:

- ``mmseg/models/backbones/resnet.py`` (``ResNetV1c``: ``deep_stem`` Sequential of conv / BN /
  ReLU x 3, widths stem_channels // 2, // 2, stem_channels; ``Bottleneck`` ``conv1..3`` with norms
  ``bn1..3`` (mmcv ``build_norm_layer`` postfixes); ``models/utils/res_layer.py`` (``downsample``
  = [conv, norm], ``contract_dilation``);
- ``mmseg/models/decode_heads/uper_head.py`` and ``psp_head.py`` (``PPM``: Sequential(pool,
  ConvModule) as ``psp_modules.{i}.1``), ``fcn_head.py`` (``convs.{i}``), ``fpn_head.py``
  (``scale_heads.{i}``: ConvModule, Upsample, ConvModule, ...), ``decode_head.py``
  (``conv_seg``); ``mmseg/models/necks/fpn.py`` (ConvModules without norm: biased convs);
  mmcv's ``cnn/bricks/conv_module.py`` (``conv``, norm ``bn`` for BN / SyncBN);
- ``mmseg/models/backbones/swin.py`` and ``models/utils/embed.py`` (``PatchEmbed.projection``,
  ``PatchMerging`` = Unfold + ``norm`` + ``reduction`` at the END of stages 0..2,
  ``WindowMSA`` ``qkv`` / ``proj`` / ``relative_position_bias_table`` and its persistent
  ``relative_position_index`` buffer, mmcv ``FFN`` ``layers.0.0`` / ``layers.1``, ``norm{i}``);
  ``tools/model_converters/swin2mmseg.py`` (what mmseg's Swin ImageNet files hold);
- mmpretrain's ``models/backbones/convnext.py`` (``downsample_layers``, ``stages.{i}.{j}``
  ``depthwise_conv`` / ``norm`` / ``pointwise_conv1`` / ``pointwise_conv2`` / ``gamma``,
  ``norm{i}`` per out index) and its ImageClassifier (``backbone.*``, ``head.fc``);
- the configs ``configs/_base_/models/{upernet_r50, pspnet_r50-d8, fpn_r50, upernet_convnext,
  upernet_swin}.py`` and ``configs/{upernet/upernet_r50_4xb4, pspnet/pspnet_r50-d8_4xb4,
  sem_fpn/fpn_r50_4xb4}-160k_ade20k-512x512.py``, ``convnext/convnext-tiny_upernet_8xb2-amp-160k_
  ade20k-512x512.py``, ``swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-
  512x512.py`` (widths, aux head on in_index 2 with 256 channels, 150 classes).

Full-size layouts are checked on the meta device (names and shapes only); values are checked by
round trips (our random model -> mmseg names, written independently below -> converter) on
narrow models, and the Swin patch-merging order and the FPN semantics numerically.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from uper_parsing.checkpoint.mmseg import (
    convert_mmseg_state_dict,
    is_mmseg_state_dict,
    mmseg_backbone_family,
)
from uper_parsing.config import get_cfg
from uper_parsing.modeling import ResNet
from uper_parsing.modeling.backbone.swin import SwinTransformer
from uper_parsing.modeling.backbone.timm_backbone import TimmBackbone
from uper_parsing.modeling.meta_arch import SemanticSegmentor

K = 150  # ADE20K classes
_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
_BN = ("weight", "bias", "running_mean", "running_var")
_LONG = re.compile(r".*(num_batches_tracked|relative_position_index)$")

# ----------------------------------------------------------------------------- mmseg layouts


def bn(prefix: str, channels: int) -> dict[str, tuple]:
    """A BatchNorm's state: affine, running statistics and the counter."""
    return {**{f"{prefix}.{s}": (channels,) for s in _BN}, f"{prefix}.num_batches_tracked": ()}


def conv_module(prefix: str, cin: int, cout: int, k: int, *, norm: bool = True) -> dict:
    """mmcv ConvModule: ``conv`` (bias only without a norm), then ``bn``."""
    shapes = {f"{prefix}.conv.weight": (cout, cin, k, k)}
    if norm:
        return {**shapes, **bn(f"{prefix}.bn", cout)}
    return {**shapes, f"{prefix}.conv.bias": (cout,)}


def resnet_v1c(depth: int = 50, prefix: str = "backbone.") -> dict[str, tuple]:
    """ResNetV1c (stem_channels 64, base_channels 64, Bottleneck, avg_down False)."""
    shapes = {}
    stem = [(0, 3, 32), (3, 32, 32), (6, 32, 64)]  # (position, in, out) of the three convs
    for position, cin, cout in stem:
        shapes[f"{prefix}stem.{position}.weight"] = (cout, cin, 3, 3)
        shapes.update(bn(f"{prefix}stem.{position + 1}", cout))
    inplanes = 64
    for i, blocks in enumerate(_BLOCKS[depth]):
        planes = 64 * 2**i
        for b in range(blocks):
            block = f"{prefix}layer{i + 1}.{b}."
            cin = inplanes if b == 0 else 4 * planes
            convs = {"conv1": (planes, cin, 1, 1), "conv2": (planes, planes, 3, 3)}
            convs["conv3"] = (4 * planes, planes, 1, 1)
            for k, (name, shape) in enumerate(convs.items(), start=1):
                shapes[block + name + ".weight"] = shape
                shapes.update(bn(f"{block}bn{k}", shape[0]))
            if b == 0:
                shapes[block + "downsample.0.weight"] = (4 * planes, inplanes, 1, 1)
                shapes.update(bn(block + "downsample.1", 4 * planes))
        inplanes = 4 * planes
    return shapes


def conv_seg(prefix: str, channels: int, classes: int) -> dict[str, tuple]:
    return {
        f"{prefix}.conv_seg.weight": (classes, channels, 1, 1),
        f"{prefix}.conv_seg.bias": (classes,),
    }


def psp_modules(prefix: str, cin: int, channels: int, scales=(1, 2, 3, 6)) -> dict[str, tuple]:
    shapes = {}
    for i, _ in enumerate(scales):
        shapes.update(conv_module(f"{prefix}.psp_modules.{i}.1", cin, channels, 1))
    return {
        **shapes,
        **conv_module(f"{prefix}.bottleneck", cin + len(scales) * channels, channels, 3),
    }


def uper_head(in_channels, channels: int, classes: int = K) -> dict[str, tuple]:
    prefix = "decode_head"
    shapes = psp_modules(prefix, in_channels[-1], channels)
    for i, cin in enumerate(in_channels[:-1]):
        shapes.update(conv_module(f"{prefix}.lateral_convs.{i}", cin, channels, 1))
        shapes.update(conv_module(f"{prefix}.fpn_convs.{i}", channels, channels, 3))
    shapes.update(conv_module(f"{prefix}.fpn_bottleneck", len(in_channels) * channels, channels, 3))
    return {**shapes, **conv_seg(prefix, channels, classes)}


def psp_head(cin: int, channels: int, classes: int = K) -> dict[str, tuple]:
    return {
        **psp_modules("decode_head", cin, channels),
        **conv_seg("decode_head", channels, classes),
    }


def fcn_aux_head(cin: int, channels: int = 256, classes: int = K) -> dict[str, tuple]:
    """FCNHead(num_convs=1, concat_input=False) as ``auxiliary_head``."""
    prefix = "auxiliary_head"
    return {
        **conv_module(f"{prefix}.convs.0", cin, channels, 3),
        **conv_seg(prefix, channels, classes),
    }


def fpn_neck(in_channels, out_channels: int) -> dict[str, tuple]:
    shapes = {}
    for i, cin in enumerate(in_channels):
        shapes.update(conv_module(f"neck.lateral_convs.{i}", cin, out_channels, 1, norm=False))
        shapes.update(conv_module(f"neck.fpn_convs.{i}", out_channels, out_channels, 3, norm=False))
    return shapes


def fpn_head(cin: int, channels: int, strides=(4, 8, 16, 32), classes: int = K) -> dict:
    """FPNHead: per level max(1, log2(s / s0)) ConvModules, each followed by an Upsample (no
    parameters) unless s == s0."""
    shapes = {}
    for i, stride in enumerate(strides):
        length = max(1, int(math.log2(stride) - math.log2(strides[0])))
        step = 1 if stride == strides[0] else 2
        for k in range(length):
            prefix = f"decode_head.scale_heads.{i}.{k * step}"
            shapes.update(conv_module(prefix, cin if k == 0 else channels, channels, 3))
    return {**shapes, **conv_seg("decode_head", channels, classes)}


def layer_norm(prefix: str, channels: int) -> dict[str, tuple]:
    return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,)}


def linear(prefix: str, cout: int, cin: int, *kernel: int) -> dict[str, tuple]:
    """A biased Linear (or a conv with ``kernel``)."""
    return {f"{prefix}.weight": (cout, cin, *kernel), f"{prefix}.bias": (cout,)}


def convnext(depths, channels, prefix: str = "backbone.", out_indices=(0, 1, 2, 3)) -> dict:
    """mmpretrain ConvNeXt (linear_pw_conv, layer scale, LN2d)."""
    c = channels
    shapes = {
        **linear(f"{prefix}downsample_layers.0.0", c[0], 3, 4, 4),
        **layer_norm(f"{prefix}downsample_layers.0.1", c[0]),
    }
    for i, depth in enumerate(depths):
        if i > 0:
            shapes.update(layer_norm(f"{prefix}downsample_layers.{i}.0", c[i - 1]))
            shapes.update(linear(f"{prefix}downsample_layers.{i}.1", c[i], c[i - 1], 2, 2))
        for j in range(depth):
            block = f"{prefix}stages.{i}.{j}."
            shapes.update(linear(block + "depthwise_conv", c[i], 1, 7, 7))
            shapes.update(layer_norm(block + "norm", c[i]))
            shapes.update(linear(block + "pointwise_conv1", 4 * c[i], c[i]))
            shapes.update(linear(block + "pointwise_conv2", c[i], 4 * c[i]))
            shapes[block + "gamma"] = (c[i],)
    for i in out_indices:
        shapes.update(layer_norm(f"{prefix}norm{i}", c[i]))
    return shapes


def swin(embed, depths, heads, window=7, prefix="backbone.", imagenet=False) -> dict:
    """mmseg SwinTransformer (patch 4, mlp_ratio 4, qkv bias, patch norm, no APE); with
    ``imagenet`` what swin2mmseg.py writes from an official file: no output norms, the final
    ``norm``, the shifted blocks' ``attn_mask`` buffers (224 input)."""
    shapes = {
        **linear(f"{prefix}patch_embed.projection", embed, 3, 4, 4),
        **layer_norm(f"{prefix}patch_embed.norm", embed),
    }
    for i, (depth, head) in enumerate(zip(depths, heads)):
        c = embed * 2**i
        for j in range(depth):
            block = f"{prefix}stages.{i}.blocks.{j}."
            attn = block + "attn.w_msa."
            shapes.update({**layer_norm(block + "norm1", c), **layer_norm(block + "norm2", c)})
            shapes[attn + "relative_position_bias_table"] = ((2 * window - 1) ** 2, head)
            shapes[attn + "relative_position_index"] = (window**2, window**2)
            shapes.update({**linear(attn + "qkv", 3 * c, c), **linear(attn + "proj", c, c)})
            shapes.update(linear(block + "ffn.layers.0.0", 4 * c, c))
            shapes.update(linear(block + "ffn.layers.1", c, 4 * c))
            if imagenet and j % 2:
                windows = (224 // 4 // 2**i // window) ** 2
                shapes[block + "attn_mask"] = (windows, window**2, window**2)
        if i < len(depths) - 1:
            shapes.update(layer_norm(f"{prefix}stages.{i}.downsample.norm", 4 * c))
            shapes[f"{prefix}stages.{i}.downsample.reduction.weight"] = (2 * c, 4 * c)
        if not imagenet:
            shapes.update(layer_norm(f"{prefix}norm{i}", c))
    if imagenet:
        shapes.update(layer_norm(f"{prefix}norm", embed * 2 ** (len(depths) - 1)))
    return shapes


def tensors(shapes: dict[str, tuple], device: str = "cpu", seed: int = 0) -> dict:
    """Random float tensors (integer buffers for counters and indices) of ``shapes``."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in shapes.items():
        if _LONG.match(key):
            out[key] = torch.zeros(shape, dtype=torch.long, device=device)
        elif device == "meta":
            out[key] = torch.empty(shape, device="meta")
        else:
            out[key] = torch.randn(shape, generator=g)
    return out


# ----------------------------------------------------------------------------- our models

R50_C = [256, 512, 1024, 2048]
SWIN_SMALL = dict(embed=24, depths=(2, 2, 2, 2), heads=(1, 2, 3, 6))

# Our architectures of mmseg's R50 models (configs/ade20k/*_R50*_bs16_160k.yaml), at BN
UPERNET = [
    "MODEL.SEM_SEG_HEAD.NAME", "UPerNetHead",
    "MODEL.SEM_SEG_HEAD.IN_FEATURES", ["res2", "res3", "res4", "res5"],
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", 512,
    "MODEL.AUX_HEAD.ENABLED", True,
    "MODEL.AUX_HEAD.IN_FEATURES", ["res4"],
    "MODEL.AUX_HEAD.CONVS_DIM", 256,
]  # fmt: skip
PSPNET = [
    "MODEL.RESNETS.OUTPUT_STRIDE", 8,
    "MODEL.SEM_SEG_HEAD.NAME", "PSPHead",
    "MODEL.SEM_SEG_HEAD.IN_FEATURES", ["res5"],
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", 512,
    "MODEL.AUX_HEAD.ENABLED", True,
    "MODEL.AUX_HEAD.IN_FEATURES", ["res4"],
    "MODEL.AUX_HEAD.CONVS_DIM", 256,
]  # fmt: skip
SEMANTIC_FPN = [
    "MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone",
    "MODEL.FPN.OUT_CHANNELS", 256,
    "MODEL.FPN.NORM", "",
    "MODEL.FPN.TOP_BLOCK", "",
    "MODEL.SEM_SEG_HEAD.NAME", "SemSegFPNHead",
    "MODEL.SEM_SEG_HEAD.IN_FEATURES", ["p2", "p3", "p4", "p5"],
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", 128,
]  # fmt: skip


def our_cfg(*overrides):
    """ResNetV1c-50 (deep stem), BN, 150 classes, random init, then ``overrides``."""
    cfg = get_cfg()
    cfg.merge_from_list(
        [
            "MODEL.DEVICE", "cpu",
            "MODEL.BACKBONE.PRETRAINED", "",
            "MODEL.RESNETS.DEPTH", 50,
            "MODEL.RESNETS.STEM_TYPE", "deep",
            "MODEL.RESNETS.NORM", "BN",
            "MODEL.SEM_SEG_HEAD.NORM", "BN",
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES", K,
            *overrides,
        ]
    )  # fmt: skip
    return cfg


CONVNEXT = ["MODEL.BACKBONE.NAME", "build_timm_backbone", "MODEL.TIMM.OUT_NORM", "LN"]
SWIN = [
    "MODEL.BACKBONE.NAME", "build_swin_backbone",
    "MODEL.SWIN.EMBED_DIM", SWIN_SMALL["embed"],
    "MODEL.SWIN.DEPTHS", list(SWIN_SMALL["depths"]),
    "MODEL.SWIN.NUM_HEADS", list(SWIN_SMALL["heads"]),
]  # fmt: skip
SMALL_HEADS = ["MODEL.SEM_SEG_HEAD.CONVS_DIM", 32, "MODEL.AUX_HEAD.CONVS_DIM", 16]

# family -> (mmseg layout, our config overrides, device)
FAMILIES = {
    "upernet_r50": (
        lambda: {**resnet_v1c(50), **uper_head(R50_C, 512), **fcn_aux_head(1024)},
        UPERNET,
        "meta",
    ),
    "pspnet_r50_d8": (
        lambda: {**resnet_v1c(50), **psp_head(2048, 512), **fcn_aux_head(1024)},
        PSPNET,
        "meta",
    ),
    "fpn_r50": (
        lambda: {**resnet_v1c(50), **fpn_neck(R50_C, 256), **fpn_head(256, 128)},
        SEMANTIC_FPN,
        "meta",
    ),
    "upernet_convnext_t": (
        lambda: {
            **convnext((3, 3, 9, 3), (96, 192, 384, 768)),
            **uper_head([96, 192, 384, 768], 512),
            **fcn_aux_head(384),
        },
        [*UPERNET, *CONVNEXT, "MODEL.TIMM.NAME", "convnext_tiny"],
        "meta",
    ),
    "upernet_swin": (  # Swin-T's layout at narrow widths (our Swin cannot be built on meta)
        lambda: {**swin(**SWIN_SMALL), **uper_head([24, 48, 96, 192], 32), **fcn_aux_head(96, 16)},
        [*UPERNET, *SWIN, *SMALL_HEADS],
        "cpu",
    ),
}


def build(cfg, device: str) -> SemanticSegmentor:
    with torch.device(device):
        return SemanticSegmentor(cfg).eval()


def assert_fills(conversion, source: dict, own: dict, ignorable: str) -> None:
    """Every source key renamed (one-to-one) or ignored as allowed; every model tensor filled
    (BatchNorm counters aside), nothing left over, shapes equal."""
    assert set(conversion.renamed) | set(conversion.ignored) == set(source)
    assert all(re.fullmatch(ignorable, k) for k in conversion.ignored), conversion.ignored
    assert len(set(conversion.renamed.values())) == len(conversion.renamed)
    expected = {k for k in own if not k.endswith("num_batches_tracked")}
    assert set(conversion.state_dict) == expected
    for key, value in conversion.state_dict.items():
        assert value.shape == own[key].shape, key


# ----------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("family", list(FAMILIES))
def test_mmseg_segmentor_layout_fills_our_model(family):
    layout, overrides, device = FAMILIES[family]
    source = tensors(layout(), device)
    assert is_mmseg_state_dict(source)
    conversion = convert_mmseg_state_dict(source, author="mmseg model zoo")
    assert (conversion.kind, conversion.source_format) == ("model", "mmseg")
    model = build(our_cfg(*overrides), device)
    ignorable = r".*\.(num_batches_tracked|relative_position_index)"
    assert_fills(conversion, source, model.state_dict(), ignorable)


def test_imagenet_resnet50_v1c_converts_to_a_resnet():
    """open-mmlab://resnet50_v1c: ResNetV1c names without ``backbone.``, plus the classifier."""
    shapes = {**resnet_v1c(50, prefix=""), "fc.weight": (1000, 2048), "fc.bias": (1000,)}
    source = tensors(shapes, "meta")
    assert is_mmseg_state_dict(source) and mmseg_backbone_family(source) == "resnet"
    conversion = convert_mmseg_state_dict(source)
    assert conversion.kind == "resnet"
    with torch.device("meta"):
        resnet = ResNet(depth=50, stem_type="deep", norm="BN")
    assert_fills(conversion, source, resnet.state_dict(), r".*num_batches_tracked|fc\..*")


def test_imagenet_convnext_classifier_converts_to_a_timm_backbone():
    """mmpretrain's ConvNeXt-T classifier (``backbone.*``, out norm3 only, ``head.fc``): timm
    names under ``model.``, norm3 as the res5 output norm (mmseg loads it there too)."""
    shapes = convnext((3, 3, 9, 3), (96, 192, 384, 768), out_indices=(3,))
    shapes.update({"head.fc.weight": (1000, 768), "head.fc.bias": (1000,)})
    source = tensors(shapes, "meta")
    conversion = convert_mmseg_state_dict(source)
    assert conversion.kind == "backbone"
    with torch.device("meta"):
        backbone = TimmBackbone(name="convnext_tiny", out_norm="LN")
    own = backbone.state_dict()
    unfilled = {f"norms.res{k}.{p}" for k in (2, 3, 4) for p in ("weight", "bias")}
    assert_fills(
        conversion, source, {k: v for k, v in own.items() if k not in unfilled}, r"head\..*"
    )
    assert conversion.renamed["backbone.norm3.weight"] == "norms.res5.weight"


def test_imagenet_swin_file_converts_to_our_swin():
    """mmseg's Swin ImageNet file (swin2mmseg.py's output): our Swin's names, the output norms
    left to their init (mmseg's norm0..3 are not in the file either)."""
    source = tensors(swin(**SWIN_SMALL, prefix="", imagenet=True))
    conversion = convert_mmseg_state_dict(source)
    assert conversion.kind == "backbone"
    backbone = SwinTransformer(embed_dim=24, depths=(2, 2, 2, 2), num_heads=(1, 2, 3, 6))
    own = {k: v for k, v in backbone.state_dict().items() if not k.startswith("norms.")}
    assert_fills(conversion, source, own, r".*\.(relative_position_index|attn_mask)|norm\..*")
    backbone.load_state_dict(conversion.state_dict, strict=False)  # loads by name and shape


def test_resnet_v1c_d8_layout_matches_mmseg():
    """Our "deep" stem + output stride 8 is mmseg's ResNetV1c (pytorch style: stride on the 3x3
    conv; avg_down False: the shortcut conv strides) with strides (1, 2, 1, 1), dilations
    (1, 1, 2, 4) and contract_dilation (first block of a dilated stage at dilation / 2)."""
    with torch.device("meta"):
        resnet = ResNet(depth=50, stem_type="deep", output_stride=8, norm="BN")
    stem = [m for m in resnet.stem if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.stride[0]) for c in stem] == [(32, 2), (32, 1), (64, 1)]
    assert resnet.stem.maxpool.kernel_size == 3 and resnet.stem.maxpool.stride == 2
    for i, (stride, dilation) in enumerate(zip((1, 2, 1, 1), (1, 1, 2, 4))):
        stage = getattr(resnet, f"res{i + 2}")
        for b, block in enumerate(stage):
            expected = dilation // 2 if b == 0 and dilation > 1 else dilation
            assert (
                block.conv2.dilation == (expected,) * 2 and block.conv2.padding == (expected,) * 2
            )
            assert block.conv2.stride == ((stride,) * 2 if b == 0 else (1, 1))
            assert block.conv1.stride == (1, 1)
        assert stage[0].downsample[0].stride == (stride, stride)


def test_recognition():
    swin_keys = list(swin(**SWIN_SMALL))
    assert mmseg_backbone_family(swin_keys) == "swin"
    assert mmseg_backbone_family(convnext((1, 1, 1, 1), (8, 8, 8, 8))) == "convnext"
    others = [
        ["backbone.stem.conv1.weight", "backbone.res2.0.conv1.weight"],  # ours / detectron2
        ["conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight"],  # torchvision
        ["stem.0.weight", "stem.1.weight", "stages.0.blocks.0.conv_dw.weight"],  # timm ConvNeXt
        ["decode_head.classifier.weight", "decode_head.bottleneck.batch_norm.weight"],  # HF
        ["conv3.weight", "layer1.0.conv1.weight"],  # CSAIL encoder
    ]
    for keys in others:
        assert not is_mmseg_state_dict(keys), keys
    with pytest.raises(ValueError, match="decode_head.conv_cat.conv.weight"):
        convert_mmseg_state_dict(
            tensors({**resnet_v1c(50), **conv_module("decode_head.conv_cat", 8, 8, 3)}, "meta")
        )


# ----------------------------------------------------------------------------- round trips


_STEM_TO_MMSEG = {"conv1": 0, "bn1": 1, "conv2": 3, "bn2": 4, "conv3": 6, "bn3": 7}
_CONVNEXT_TO_MMSEG = {
    "conv_dw": "depthwise_conv",
    "norm": "norm",
    "mlp.fc1": "pointwise_conv1",
    "mlp.fc2": "pointwise_conv2",
}
_OUR_BLOCKS = [(0, 0), (1, 0), (0, 1), (1, 1)]  # (row, col) offset of our merged blocks


def swin_merge_to_unfold(t: torch.Tensor) -> torch.Tensor:
    """Our block-major 4C channels (block b = offset _OUR_BLOCKS[b]) -> nn.Unfold's c * 4 +
    (2 * row + col), index by index."""
    c = t.shape[-1] // 4
    order = [0] * (4 * c)
    for b, (row, col) in enumerate(_OUR_BLOCKS):
        for channel in range(c):
            order[channel * 4 + 2 * row + col] = b * c + channel
    return t[..., order]


def _head_to_mmseg(key: str, scale_positions: dict[int, int]) -> str:
    key = key.replace("sem_seg_head.", "decode_head.").replace("aux_head.", "auxiliary_head.")
    key = key.replace(".ppm.branches.", ".psp_modules.").replace(".predictor.", ".conv_seg.")
    key = re.sub(
        r"scale_heads\.(\d+)\.(\d+)\.",
        lambda m: f"scale_heads.{m[1]}.{int(m[2]) * scale_positions[int(m[1])]}.",
        key,
    )
    return key.replace(".norm.", ".bn.")


def _backbone_to_mmseg(key: str) -> str:
    """Our backbone names (ResNet, FPN, TimmBackbone ConvNeXt, SwinTransformer) -> mmseg's."""
    key = key.replace("backbone.bottom_up.", "backbone.")
    key = key.replace("backbone.lateral_convs.", "neck.lateral_convs.")
    key = key.replace("backbone.output_convs.", "neck.fpn_convs.")
    key = re.sub(
        r"backbone\.stem\.(\w+)\.", lambda m: f"backbone.stem.{_STEM_TO_MMSEG[m[1]]}.", key
    )
    key = re.sub(r"backbone\.res(\d)\.", lambda m: f"backbone.layer{int(m[1]) - 1}.", key)
    key = re.sub(r"backbone\.norms\.res(\d)\.", lambda m: f"backbone.norm{int(m[1]) - 2}.", key)
    key = key.replace("backbone.model.stem.", "backbone.downsample_layers.0.")
    key = re.sub(r"model\.stages\.(\d)\.downsample\.", r"downsample_layers.\1.", key)
    key = re.sub(
        r"model\.stages\.(\d)\.blocks\.(\d+)\.(conv_dw|norm|mlp\.fc1|mlp\.fc2|gamma)",
        lambda m: f"stages.{m[1]}.{m[2]}.{_CONVNEXT_TO_MMSEG.get(m[3], m[3])}",
        key,
    )
    key = key.replace("patch_embed.proj.", "patch_embed.projection.")
    key = re.sub(
        r"layers\.(\d)\.downsample\.", lambda m: f"stages.{int(m[1]) - 1}.downsample.", key
    )
    key = re.sub(r"layers\.(\d)\.blocks\.", r"stages.\1.blocks.", key)
    key = re.sub(r"attn\.(qkv|proj|relative_position_bias_table)", r"attn.w_msa.\1", key)
    return key.replace("mlp.fc1.", "ffn.layers.0.0.").replace("mlp.fc2.", "ffn.layers.1.")


def to_mmseg(state: dict, scale_positions: dict[int, int]) -> dict[str, torch.Tensor]:
    """Our state dict -> mmseg's names and patch-merging order (the inverse of the converter)."""
    out = {}
    for key, value in state.items():
        if key.startswith(("sem_seg_head.", "aux_head.")):
            name = _head_to_mmseg(key, scale_positions)
        else:
            name = _backbone_to_mmseg(key)
        if ".downsample.norm." in key or ".downsample.reduction." in key:
            value = swin_merge_to_unfold(value)
        out[name] = value
    return out


FPN_SMALL = ["MODEL.FPN.OUT_CHANNELS", 16, "MODEL.SEM_SEG_HEAD.CONVS_DIM", 8]
FPN_POSITIONS = {0: 1, 1: 2, 2: 2, 3: 2}  # scale_heads.{i}.{k}: the k-th conv at k * step

ROUND_TRIPS = {
    "upernet_r50": [*UPERNET, *SMALL_HEADS],
    "fpn_r50": [*SEMANTIC_FPN, *FPN_SMALL],
    # timm's test_convnext: ConvNeXt-T's layout at depths 1, 2, 4, 2
    "upernet_convnext": [*UPERNET, *CONVNEXT, "MODEL.TIMM.NAME", "test_convnext", *SMALL_HEADS],
    "upernet_swin": [*UPERNET, *SWIN, *SMALL_HEADS],
}


@pytest.mark.parametrize("family", list(ROUND_TRIPS))
def test_round_trip_gives_identical_tensors(family):
    """Our model with every tensor random (BN statistics and LayerNorms too, so that no two
    tensors are alike) -> mmseg's layout -> converter: the same tensors in the same places."""
    torch.manual_seed(0)
    model = build(our_cfg(*ROUND_TRIPS[family]), "cpu")
    own = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    for value in own.values():
        value.normal_()
    source = to_mmseg(own, FPN_POSITIONS)
    conversion = convert_mmseg_state_dict(source)
    assert conversion.state_dict.keys() == own.keys()
    for key, value in own.items():
        assert torch.equal(conversion.state_dict[key], value), key


# ----------------------------------------------------------------------------- numerics


def mmseg_patch_merging(x: torch.Tensor, norm_w, norm_b, reduction) -> torch.Tensor:
    """mmseg's PatchMerging (models/utils/embed.py): (N, H, W, C) -> NCHW, "corner" adaptive
    padding (right / bottom to even), nn.Unfold(2, stride 2), transpose, LayerNorm, Linear."""
    n, h, w, c = x.shape
    x = F.pad(x.permute(0, 3, 1, 2), (0, w % 2, 0, h % 2))
    x = F.unfold(x, kernel_size=2, stride=2).transpose(1, 2)  # (N, L, 4C), c * 4 + kh * 2 + kw
    x = F.linear(F.layer_norm(x, (4 * c,), norm_w, norm_b), reduction)
    return x.view(n, (h + 1) // 2, (w + 1) // 2, 2 * c)


@pytest.mark.parametrize("height, width", [(8, 12), (7, 9)])
def test_swin_patch_merging_reorder_reproduces_mmseg(height, width):
    """mmseg-order weights, converted, give our patch merging mmseg's output."""
    source = tensors(swin(**SWIN_SMALL, prefix="", imagenet=True), seed=5)
    for key, value in source.items():  # Linear weights of unit-variance outputs, as trained ones
        if key.endswith("reduction.weight"):
            source[key] = value / value.shape[1] ** 0.5
    backbone = SwinTransformer(embed_dim=24, depths=(2, 2, 2, 2), num_heads=(1, 2, 3, 6)).eval()
    backbone.load_state_dict(convert_mmseg_state_dict(source).state_dict, strict=False)
    for stage in (0, 2):
        c = 24 * 2**stage
        x = torch.randn(2, height, width, c, generator=torch.Generator().manual_seed(stage))
        weights = [source[f"stages.{stage}.downsample.{n}"] for n in ("norm.weight", "norm.bias")]
        expected = mmseg_patch_merging(
            x, *weights, source[f"stages.{stage}.downsample.reduction.weight"]
        )
        with torch.no_grad():
            ours = backbone.layers[stage + 1].downsample(x)
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


def mmseg_fpn_logits(source: dict, features: list[torch.Tensor]) -> torch.Tensor:
    """mmseg's FPN neck (necks/fpn.py: biased 1x1 laterals, top-down nearest to the finer size,
    biased 3x3 outputs) + FPNHead (fpn_head.py, eval BN) + conv_seg, from mmseg-named weights."""

    def conv(x, prefix, padding):
        return F.conv2d(
            x, source[f"{prefix}.conv.weight"], source.get(f"{prefix}.conv.bias"), padding=padding
        )

    def conv_module(x, prefix):
        stats = [
            source[f"{prefix}.bn.{s}"] for s in ("running_mean", "running_var", "weight", "bias")
        ]
        return F.relu(F.batch_norm(conv(x, prefix, 1), *stats, training=False, eps=1e-5))

    laterals = [conv(f, f"neck.lateral_convs.{i}", 0) for i, f in enumerate(features)]
    for i in range(len(laterals) - 1, 0, -1):
        laterals[i - 1] = laterals[i - 1] + F.interpolate(
            laterals[i], size=laterals[i - 1].shape[2:], mode="nearest"
        )
    outs = [conv(x, f"neck.fpn_convs.{i}", 1) for i, x in enumerate(laterals)]
    output = None
    for i, x in enumerate(outs):
        positions = sorted(
            {int(k.split(".")[3]) for k in source if k.startswith(f"decode_head.scale_heads.{i}.")}
        )
        for position in positions:
            x = conv_module(x, f"decode_head.scale_heads.{i}.{position}")
            if i > 0:  # Upsample(scale_factor=2): size = int(t * 2), bilinear
                x = F.interpolate(
                    x, size=[2 * s for s in x.shape[2:]], mode="bilinear", align_corners=False
                )
        if output is None:
            output = x
        else:
            output = output + F.interpolate(
                x, size=output.shape[2:], mode="bilinear", align_corners=False
            )
    return F.conv2d(
        output, source["decode_head.conv_seg.weight"], source["decode_head.conv_seg.bias"]
    )


def test_semantic_fpn_matches_mmseg_numerics():
    """mmseg-named Semantic FPN weights (our random model's, head BN statistics randomised),
    converted: our FPN (NORM "") + SemSegFPNHead (NORM BN) give mmseg's neck + FPNHead logits at
    an input size that is a multiple of 32 (elsewhere mmseg's 2x upsampling and final resize
    differ from our direct resize to the finest size)."""
    torch.manual_seed(0)
    model = build(our_cfg(*SEMANTIC_FPN, *FPN_SMALL), "cpu")
    source = to_mmseg(model.state_dict(), FPN_POSITIONS)
    g = torch.Generator().manual_seed(7)
    for key, value in source.items():
        if key.startswith("decode_head.") and key.endswith(("running_mean", "bias")):
            source[key] = torch.randn(value.shape, generator=g) * 0.1
        elif key.startswith("decode_head.") and key.endswith("running_var"):
            source[key] = torch.rand(value.shape, generator=g) + 0.5
    model.load_state_dict(convert_mmseg_state_dict(source).state_dict)
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        bottom_up = model.backbone.bottom_up(x)
        expected = mmseg_fpn_logits(source, [bottom_up[f"res{k}"] for k in range(2, 6)])
        ours = model.sem_seg_head.layers(model.backbone(x))
    scale = expected.abs().max().item()
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6 * scale)
