"""ResNet-18/34/50/101 from torchvision as a ``Backbone`` with outputs ``res2..res5``."""

from __future__ import annotations

import functools
import logging
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

from ...checkpoint.conversion import Conversion, as_tensors, rename_keys
from ...checkpoint.formats import load_backbone_weights
from ...config import configurable
from ...layers import ShapeSpec, convert_frozen_batchnorm, get_norm
from .backbone import Backbone
from .build import BACKBONE_REGISTRY

__all__ = [
    "ResNet",
    "build_resnet_backbone",
    "convert_torchvision_state_dict",
    "is_torchvision_state_dict",
]

logger = logging.getLogger(__name__)

_RESNETS = {
    18: torchvision.models.resnet18,
    34: torchvision.models.resnet34,
    50: torchvision.models.resnet50,
    101: torchvision.models.resnet101,
}
_BASIC_BLOCK_DEPTHS = (18, 34)
_STAGES = ("res2", "res3", "res4", "res5")  # torchvision's layer1..layer4
# Stages whose stride-2 is replaced by dilation, per output stride (DeepLab / PSPNet "D8", "D16")
_DILATED_STAGES = {32: (), 16: ("res5",), 8: ("res4", "res5")}
# Widths of the three 3x3 convs of each deep stem; the last is what res2 receives
_DEEP_STEM_WIDTHS = {
    "deep": (32, 32, 64),  # ResNetV1c (mmseg, "Bag of Tricks"): res2 takes 64 channels as usual
    "deep_base": (64, 64, 128),  # CSAIL's "deep-base" ResNets: res2 takes 128 channels
}
_STEM_TYPES = ("basic", *_DEEP_STEM_WIDTHS)
# torchvision state-dict names -> names in this module
_TORCHVISION_PREFIXES = {
    "conv1.": "stem.conv1.",
    "bn1.": "stem.bn1.",
    **{f"layer{i + 1}.": f"{stage}." for i, stage in enumerate(_STAGES)},
}
_TORCHVISION_KEY = re.compile(r"(?P<prefix>conv1\.|bn1\.|layer[1-4]\.)(?P<rest>.+)")


def _torchvision_resnet(
    depth: int, norm_layer: functools.partial, dilated: Sequence[str]
) -> torchvision.models.ResNet:
    """torchvision's ResNet with the stride of the ``dilated`` stages replaced by dilation
    (torchvision's own option for Bottleneck, ``_dilate_basic_stage`` for BasicBlock)."""
    if depth not in _BASIC_BLOCK_DEPTHS:
        replace = [name in dilated for name in _STAGES[1:]]
        return _RESNETS[depth](
            weights=None, norm_layer=norm_layer, replace_stride_with_dilation=replace
        )
    tv = _RESNETS[depth](weights=None, norm_layer=norm_layer)
    dilation = 1
    for i, name in enumerate(_STAGES):
        if name in dilated:
            _dilate_basic_stage(getattr(tv, f"layer{i + 1}"), dilation, dilation * 2)
            dilation *= 2
    return tv


def _basic_stem(tv: torchvision.models.ResNet, in_channels: int) -> nn.Sequential:
    """torchvision's stem: 7x7/2 conv, norm, ReLU, 3x3/2 max pool."""
    conv1 = tv.conv1
    if in_channels != conv1.in_channels:
        conv1 = nn.Conv2d(in_channels, conv1.out_channels, 7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(conv1.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(OrderedDict(conv1=conv1, bn1=tv.bn1, relu=tv.relu, maxpool=tv.maxpool))


def _deep_stem(
    in_channels: int, widths: Sequence[int], norm_layer: functools.partial
) -> nn.Sequential:
    """Three 3x3 conv + norm + ReLU of ``widths`` (the first with stride 2), then 3x3/2 max pool."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, out_channels in enumerate(widths, start=1):
        conv = nn.Conv2d(
            in_channels, out_channels, 3, stride=2 if i == 1 else 1, padding=1, bias=False
        )
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        layers[f"conv{i}"] = conv
        layers[f"bn{i}"] = norm_layer(out_channels)
        layers[f"relu{i}"] = nn.ReLU(inplace=True)
        in_channels = out_channels
    layers["maxpool"] = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    return nn.Sequential(layers)


def _conv_like(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A fresh (He-initialised) conv like ``conv`` but reading ``in_channels`` channels."""
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        bias=conv.bias is not None,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    return new


def _widen_first_block(
    stage: nn.Sequential, in_channels: int, norm_layer: functools.partial
) -> None:
    """Make the first block of ``stage`` read ``in_channels`` channels (a stem wider than 64):
    its first conv is rebuilt, and its shortcut gets (or rebuilds) a 1x1 conv + norm projection,
    as a torchvision ResNet built with that ``inplanes`` would have."""
    first = stage[0]
    if first.conv1.in_channels == in_channels:
        return
    first.conv1 = _conv_like(first.conv1, in_channels)
    out_channels = _stage_out_channels(stage)
    if first.downsample is None:
        projection = nn.Conv2d(in_channels, out_channels, 1, stride=first.stride, bias=False)
        nn.init.kaiming_normal_(projection.weight, mode="fan_out", nonlinearity="relu")
        first.downsample = nn.Sequential(projection, norm_layer(out_channels))
    else:
        first.downsample[0] = _conv_like(first.downsample[0], in_channels)


def _build_stem(
    stem_type: str,
    tv: torchvision.models.ResNet,
    in_channels: int,
    norm_layer: functools.partial,
) -> nn.Sequential:
    """The stem of ``stem_type`` ("basic" or a key of ``_DEEP_STEM_WIDTHS``); a deep stem wider
    than 64 channels widens the first block of torchvision's ``layer1`` to match."""
    if stem_type == "basic":
        return _basic_stem(tv, in_channels)
    widths = _DEEP_STEM_WIDTHS[stem_type]
    _widen_first_block(tv.layer1, widths[-1], norm_layer)
    return _deep_stem(in_channels, widths, norm_layer)


def _set_dilation(conv: nn.Conv2d, dilation: int) -> None:
    """Make a 3x3 stride-1 conv dilated while keeping the spatial size."""
    conv.stride = (1, 1)
    conv.dilation = (dilation, dilation)
    conv.padding = (dilation * (conv.kernel_size[0] - 1) // 2,) * 2


def _dilate_basic_stage(stage: nn.Sequential, previous_dilation: int, dilation: int) -> None:
    """Replace the stride 2 of a BasicBlock stage by dilation, as torchvision does for Bottleneck.

    The strided conv (first block's conv1) and the shortcut become stride 1; the strided conv keeps
    ``previous_dilation`` and every 3x3 conv after it gets ``dilation``.
    """
    first = stage[0]
    _set_dilation(first.conv1, previous_dilation)
    _set_dilation(first.conv2, dilation)
    if first.downsample is not None:
        first.downsample[0].stride = (1, 1)
    first.stride = 1
    for block in stage[1:]:
        _set_dilation(block.conv1, dilation)
        _set_dilation(block.conv2, dilation)


def _move_stride_to_1x1(stage: nn.Sequential) -> None:
    """MSRA / Caffe2 Bottleneck layout: the first block's stride moves from its 3x3 conv2 to its
    1x1 conv1 (a no-op for stride-1 and dilated stages); the shortcut keeps its stride."""
    first = stage[0]
    first.conv1.stride, first.conv2.stride = first.conv2.stride, (1, 1)


def _stage_out_channels(stage: nn.Sequential) -> int:
    last = stage[-1]
    return (last.conv2 if isinstance(last, BasicBlock) else last.conv3).out_channels


def _stem_stride(stem: nn.Sequential) -> int:
    stride = 1
    for m in stem.modules():
        if isinstance(m, nn.Conv2d):
            stride *= m.stride[0]
        elif isinstance(m, nn.MaxPool2d):
            stride *= m.stride
    return stride


class ResNet(Backbone):
    """torchvision ResNet returning the stages ``res2..res5`` (strides 4, 8, 16, 32 at output
    stride 32; res5 stays at 16 for output stride 16; res4 and res5 stay at 8 for output stride 8).

    Stages after the deepest requested output are not built. Module names: ``stem``,
    ``res2..res5`` (torchvision's ``layer1..layer4``).
    """

    @configurable
    def __init__(
        self,
        *,
        depth: int = 50,
        out_features: Sequence[str] = _STAGES,
        norm: str = "FrozenBN",
        freeze_at: int = 0,
        output_stride: int = 32,
        stem_type: str = "basic",
        pretrained: str = "",
        in_channels: int = 3,
        stride_in_1x1: bool = False,
    ) -> None:
        """
        Args:
            depth: 18, 34, 50 or 101.
            out_features: stages returned by forward, a subset of res2..res5.
            norm: "FrozenBN", "BN", "SyncBN" or "GN".
            freeze_at: 0 trains everything; k > 0 freezes the stem and the first k - 1 stages
                (parameters get ``requires_grad=False``, BatchNorms become FrozenBatchNorm2d).
            output_stride: 32, 16 or 8; below 32 the last stages use dilation instead of stride.
            stem_type: "basic" (7x7 conv), "deep" (three 3x3 convs 32-32-64, mmseg's ResNetV1c)
                or "deep_base" (three 3x3 convs 64-64-128, CSAIL's ResNets; res2's first block
                then reads 128 channels).
            pretrained: path or URL of ImageNet weights ("" = random init): a torchvision state
                dict, a detectron2 / Caffe2 ``.pkl``, mmcv's ResNetV1c ... (see
                ``load_pretrained_weights``).
            in_channels: channels of the input image.
            stride_in_1x1: Bottleneck only (depth 50 / 101): the stride 2 of each stage's first
                block on its 1x1 conv1 (MSRA / Caffe2 / detectron2 weights) instead of on the
                3x3 conv2 (torchvision weights).
        """
        super().__init__()
        _check_args(depth, out_features, norm, output_stride, stem_type)
        if stride_in_1x1 and depth in _BASIC_BLOCK_DEPTHS:
            raise ValueError(
                f"stride_in_1x1 (MODEL.RESNETS.STRIDE_IN_1X1) needs a Bottleneck ResNet "
                f"(depth 50 or 101), got depth {depth}"
            )
        norm_layer = functools.partial(get_norm, norm)
        tv = _torchvision_resnet(depth, norm_layer, _DILATED_STAGES[output_stride])
        if stride_in_1x1:
            for i in range(len(_STAGES)):
                _move_stride_to_1x1(getattr(tv, f"layer{i + 1}"))
        self.stem = _build_stem(stem_type, tv, in_channels, norm_layer)
        self.stage_names = list(_STAGES[: max(_STAGES.index(f) for f in out_features) + 1])
        for i, name in enumerate(self.stage_names):
            self.add_module(name, getattr(tv, f"layer{i + 1}"))
        self._out_features = list(out_features)
        self._out_feature_channels, self._out_feature_strides = {}, {}
        stride = _stem_stride(self.stem)
        for name in self.stage_names:
            stage = getattr(self, name)
            stride *= stage[0].stride
            self._out_feature_channels[name] = _stage_out_channels(stage)
            self._out_feature_strides[name] = stride
        if pretrained:
            self.load_pretrained_weights(pretrained)
        elif norm == "FrozenBN" or freeze_at > 0:
            logger.warning(
                "ResNet-%d has random weights (MODEL.BACKBONE.PRETRAINED is empty) but norm %s "
                "and FREEZE_AT %d keep layers fixed: frozen BatchNorm without ImageNet "
                "statistics leaves the backbone unnormalised and training can diverge. From "
                "scratch, set MODEL.RESNETS.NORM BN (SyncBN on several GPUs) and "
                "MODEL.BACKBONE.FREEZE_AT 0.",
                depth,
                norm,
                freeze_at,
            )
        self.freeze(freeze_at)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec) -> dict:
        res = cfg.MODEL.RESNETS
        return {
            "depth": res.DEPTH,
            "out_features": res.OUT_FEATURES,
            "norm": res.NORM,
            "freeze_at": cfg.MODEL.BACKBONE.FREEZE_AT,
            "output_stride": res.OUTPUT_STRIDE,
            "stem_type": res.STEM_TYPE,
            "pretrained": cfg.MODEL.BACKBONE.PRETRAINED,
            "in_channels": input_shape.channels,
            "stride_in_1x1": res.STRIDE_IN_1X1,
        }

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: Tensor (N, C, H, W). Returns {"resK": Tensor (N, C_k, H/s_k, W/s_k)}."""
        outputs = {}
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def freeze(self, freeze_at: int) -> ResNet:
        """Freeze the stem (freeze_at >= 1) and stages res2..res{freeze_at} (freeze_at >= 2).

        Frozen parameters stop requiring gradients and frozen BatchNorms become
        FrozenBatchNorm2d, as in detectron2. Returns self.
        """
        if not 0 <= freeze_at <= len(_STAGES) + 1:
            raise ValueError(f"freeze_at must be in [0, {len(_STAGES) + 1}], got {freeze_at}")
        for module in [self.stem, *(getattr(self, n) for n in self.stage_names)][:freeze_at]:
            for p in module.parameters():
                p.requires_grad_(False)
            convert_frozen_batchnorm(module)
        return self

    def load_pretrained_weights(self, path: str) -> None:
        """Load ImageNet weights from ``path`` (a path or URL) through
        ``checkpoint.load_backbone_weights``, which recognises the format: a torchvision ResNet
        state dict (``fc.*`` ignored), a Caffe2 / Detectron ResNet ``.pkl`` (``R-50.pkl``,
        ``R-101.pkl``: these need ``stride_in_1x1``, BGR 0-255 input and ``PIXEL_STD [1, 1,
        1]``), the ResNet of a detectron2 file, mmcv's ResNetV1c (``open-mmlab://resnet50_v1c``,
        ``stem_type="deep"``), or a file written by ``tools/convert_weights.py``.

        Missing, unexpected and shape-mismatched tensors are logged by module, not fatal (a deep
        stem or a GN backbone cannot take every ImageNet tensor).
        """
        load_backbone_weights(self, path)


def is_torchvision_state_dict(keys: Iterable[str]) -> bool:
    """Whether ``keys`` are a torchvision ResNet's (``conv1.weight``, ``bn1.*``, ``layer1.*`` ..
    ``layer4.*``, ``fc.*``) and nothing else."""
    keys = list(keys)
    return "conv1.weight" in keys and all(
        _TORCHVISION_KEY.fullmatch(k) or k.startswith("fc.") for k in keys
    )


def _torchvision_to_resnet(m: re.Match, ctx: Any) -> str:
    return _TORCHVISION_PREFIXES[m["prefix"]] + m["rest"]


def convert_torchvision_state_dict(
    state: Mapping[str, Any], *, author: str = "torchvision"
) -> Conversion:
    """torchvision ResNet names (``conv1``, ``bn1``, ``layer1..4``) -> this module's
    (``stem.conv1``, ``stem.bn1``, ``res2..5``), ``kind == "resnet"``; ``fc.*`` is ignored."""
    tensors = as_tensors(state)
    rules = [(_TORCHVISION_KEY.pattern, _torchvision_to_resnet)]
    renamed, ignored = rename_keys(tensors, rules, r"fc\..*", None, "torchvision")
    converted = {new: tensors[old] for old, new in renamed.items()}
    return Conversion(converted, "resnet", "torchvision", author, renamed, ignored, filled=[])


def _check_args(
    depth: int, out_features: Sequence[str], norm: str, output_stride: int, stem_type: str
) -> None:
    if depth not in _RESNETS:
        raise ValueError(f"ResNet depth must be one of {sorted(_RESNETS)}, got {depth}")
    unknown = [f for f in out_features if f not in _STAGES]
    if unknown or not out_features:
        raise ValueError(f"ResNet out_features must be a non-empty subset of {_STAGES}: {unknown}")
    if norm == "":
        raise ValueError("ResNet needs a norm: 'FrozenBN', 'BN', 'SyncBN' or 'GN'")
    if output_stride not in _DILATED_STAGES:
        raise ValueError(f"output_stride must be one of {sorted(_DILATED_STAGES)}: {output_stride}")
    if stem_type not in _STEM_TYPES:
        raise ValueError(f"stem_type must be one of {_STEM_TYPES}, got '{stem_type}'")


@BACKBONE_REGISTRY.register()
def build_resnet_backbone(cfg, input_shape: ShapeSpec) -> ResNet:
    """ResNet from ``MODEL.RESNETS`` and ``MODEL.BACKBONE`` (freeze_at, pretrained)."""
    return ResNet(cfg, input_shape)
