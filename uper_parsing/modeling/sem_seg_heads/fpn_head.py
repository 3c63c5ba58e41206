"""SemSegFPNHead: the semantic branch of Panoptic FPN (detectron2's SemSegFPNHead)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ...config import configurable
from ...layers import ConvNormAct, ShapeSpec, resize_to
from .base import SemSegHead, head_config
from .build import SEM_SEG_HEADS_REGISTRY

__all__ = ["SemSegFPNHead"]


@SEM_SEG_HEADS_REGISTRY.register()
class SemSegFPNHead(SemSegHead):
    """Per level at stride s: ceil(log2(s / common_stride)) x (3x3 ConvNormAct + 2x upsample)
    (one conv, no upsample, at the common stride); the levels are summed at the common stride,
    then dropout and a 1x1 classifier.

    Upsampling goes to explicit sizes (2x, and the last step to the common-stride map's size),
    so odd input sizes line up.
    """

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        num_classes: int,
        ignore_value: int = 255,
        convs_dim: int = 128,
        common_stride: int = 4,
        norm: str = "GN",
        dropout: float = 0.0,
        loss_weight: float = 1.0,
        loss_name: str = "loss_sem_seg",
        class_weights: Sequence[float] | None = None,
        loss_avg_non_ignore: bool = True,
    ) -> None:
        """
        Args:
            input_shape: the pyramid levels the head reads (e.g. p2..p5), strides >= common_stride.
            convs_dim: channels of every conv inside the head.
            common_stride: stride the levels are brought to and the logits come out at.
        """
        super().__init__(
            predictor_in_channels=convs_dim,
            num_classes=num_classes,
            ignore_value=ignore_value,
            dropout=dropout,
            loss_weight=loss_weight,
            loss_name=loss_name,
            class_weights=class_weights,
            loss_avg_non_ignore=loss_avg_non_ignore,
        )
        self.in_features = sorted(input_shape, key=lambda name: input_shape[name].stride)
        self.common_stride = common_stride
        self.scale_heads = nn.ModuleList()
        for name in self.in_features:
            shape = input_shape[name]
            if shape.stride < common_stride:
                raise ValueError(
                    f"{name} has stride {shape.stride} < common_stride {common_stride}"
                )
            steps = max(1, math.ceil(math.log2(shape.stride / common_stride)))
            self.scale_heads.append(
                nn.ModuleList(
                    ConvNormAct(shape.channels if k == 0 else convs_dim, convs_dim, 3, norm=norm)
                    for k in range(steps)
                )
            )
        # detectron2's SemSegFPNHead starts its classifier as its convs (c2_msra_fill)
        nn.init.kaiming_normal_(self.predictor.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.predictor.bias)
        self._upsampled = [input_shape[n].stride != common_stride for n in self.in_features]
        self._finest_scale = input_shape[self.in_features[0]].stride // common_stride

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> dict:
        return {
            **head_config(cfg, input_shape),
            "common_stride": cfg.MODEL.SEM_SEG_HEAD.COMMON_STRIDE,
        }

    def layers(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """features: {name: Tensor (N, C_i, H/s_i, W/s_i)}.

        Returns: Tensor (N, K, h, w) at the common stride, (h, w) = the finest level's size times
        its stride / common_stride.
        """
        finest = features[self.in_features[0]].shape[-2:]
        size = (finest[0] * self._finest_scale, finest[1] * self._finest_scale)
        total = None
        for name, convs, upsampled in zip(self.in_features, self.scale_heads, self._upsampled):
            x = features[name]
            for k, conv in enumerate(convs):
                x = conv(x)
                if upsampled:
                    last = k == len(convs) - 1
                    x = resize_to(x, size if last else (2 * x.shape[-2], 2 * x.shape[-1]))
            total = x if total is None else total + x
        return self.predict(total)
