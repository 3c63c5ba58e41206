"""Feature Pyramid Network over a bottom-up backbone (detectron2 / torchvision FPN)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...config import configurable
from ...layers import ConvNormAct, ShapeSpec
from .backbone import Backbone
from .build import BACKBONE_REGISTRY
from .resnet import build_resnet_backbone

__all__ = ["FPN", "LastLevelMaxPool", "build_resnet_fpn_backbone"]


class LastLevelMaxPool(nn.Module):
    """The extra level of Mask R-CNN's FPN: p6 = max_pool(p5, kernel 1, stride 2)."""

    num_levels = 1

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: Tensor (N, C, h, w), the coarsest FPN output.

        Returns: [Tensor (N, C, ceil(h/2), ceil(w/2))].
        """
        return [F.max_pool2d(x, kernel_size=1, stride=2, padding=0)]


_TOP_BLOCKS = {"maxpool": LastLevelMaxPool}


class FPN(Backbone):
    """Lateral 1x1 convs, a top-down pathway (nearest upsampling to the finer level's size, then
    sum) and 3x3 output convs. Outputs ``p<k>`` at stride ``2**k`` (p2..p5 over res2..res5), plus
    the top block's levels (p6).
    """

    @configurable
    def __init__(
        self,
        bottom_up: Backbone,
        *,
        in_features: Sequence[str],
        out_channels: int = 256,
        norm: str = "",
        top_block: nn.Module | None = None,
    ) -> None:
        """
        Args:
            bottom_up: backbone whose outputs ``in_features`` have strides doubling level by level.
            in_features: bottom-up features, finest first (e.g. res2..res5).
            out_channels: channels of every pyramid level.
            norm: norm after the lateral and output convs ("" = none, convs then have a bias).
            top_block: module with ``num_levels`` that maps the coarsest output to extra levels.
        """
        super().__init__()
        shapes = bottom_up.output_shape()
        missing = [f for f in in_features if f not in shapes]
        if missing:
            raise ValueError(f"FPN in_features {missing} are not backbone outputs {list(shapes)}")
        strides = [shapes[f].stride for f in in_features]
        for finer, coarser in zip(strides, strides[1:]):
            if coarser != 2 * finer:
                raise ValueError(f"FPN needs strides doubling level by level, got {strides}")
        self.bottom_up = bottom_up
        self.in_features = list(in_features)
        self.top_block = top_block
        self.lateral_convs = nn.ModuleList(
            ConvNormAct(shapes[f].channels, out_channels, 1, norm=norm, activation=False)
            for f in in_features
        )
        self.output_convs = nn.ModuleList(
            ConvNormAct(out_channels, out_channels, 3, norm=norm, activation=False)
            for _ in in_features
        )
        levels = [int(math.log2(s)) for s in strides]
        if top_block is not None:
            levels += [levels[-1] + k for k in range(1, top_block.num_levels + 1)]
        self._out_features = [f"p{k}" for k in levels]
        self._out_feature_strides = {f"p{k}": 2**k for k in levels}
        self._out_feature_channels = {f"p{k}": out_channels for k in levels}
        self._size_divisibility = strides[-1]

    @classmethod
    def from_config(cls, cfg, bottom_up: Backbone) -> dict:
        name = cfg.MODEL.FPN.TOP_BLOCK
        if name and name not in _TOP_BLOCKS:
            raise ValueError(f"MODEL.FPN.TOP_BLOCK must be '' or one of {list(_TOP_BLOCKS)}")
        return {
            "bottom_up": bottom_up,
            "in_features": cfg.MODEL.FPN.IN_FEATURES,
            "out_channels": cfg.MODEL.FPN.OUT_CHANNELS,
            "norm": cfg.MODEL.FPN.NORM,
            "top_block": _TOP_BLOCKS[name]() if name else None,
        }

    @property
    def size_divisibility(self) -> int:
        """The coarsest bottom-up stride, as detectron2 (the max-pool level works at any size)."""
        return self._size_divisibility

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: Tensor (N, C, H, W). Returns {"pK": Tensor (N, out_channels, H/2^K, W/2^K)}."""
        bottom = self.bottom_up(x)
        top_down = self.lateral_convs[-1](bottom[self.in_features[-1]])
        results = [self.output_convs[-1](top_down)]
        for name, lateral_conv, output_conv in zip(
            reversed(self.in_features[:-1]),
            reversed(self.lateral_convs[:-1]),
            reversed(self.output_convs[:-1]),
        ):
            lateral = lateral_conv(bottom[name])
            # nearest, as detectron2 / torchvision FPN, but to the lateral's size: odd sizes work
            top_down = lateral + F.interpolate(top_down, size=lateral.shape[-2:], mode="nearest")
            results.insert(0, output_conv(top_down))
        if self.top_block is not None:
            results.extend(self.top_block(results[-1]))
        return dict(zip(self._out_features, results))


@BACKBONE_REGISTRY.register()
def build_resnet_fpn_backbone(cfg, input_shape: ShapeSpec) -> FPN:
    """ResNet (``MODEL.RESNETS``) + FPN (``MODEL.FPN``)."""
    return FPN(cfg, build_resnet_backbone(cfg, input_shape))
