"""UPerNetHead (UPerNet paper, mmseg uper_head): PPM on the top level + FPN fusion at 1/4."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...config import configurable
from ...layers import ConvNormAct, ShapeSpec, resize_to
from .base import SemSegHead, head_config
from .build import SEM_SEG_HEADS_REGISTRY
from .ppm import PPM

__all__ = ["UPerNetHead"]


@SEM_SEG_HEADS_REGISTRY.register()
class UPerNetHead(SemSegHead):
    """PPM + 3x3 bottleneck on the coarsest level; 1x1 laterals on the others; top-down sum
    (each coarser map resized to the finer one); 3x3 FPN conv on every non-top level; all levels
    resized to the finest and concatenated; 3x3 fusion conv; dropout; 1x1 classifier.

    Logits come out at the finest input stride (4 over res2..res5).
    """

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        num_classes: int,
        ignore_value: int = 255,
        convs_dim: int = 512,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        norm: str = "BN",
        dropout: float = 0.1,
        loss_weight: float = 1.0,
        loss_name: str = "loss_sem_seg",
        class_weights: Sequence[float] | None = None,
        loss_avg_non_ignore: bool = True,
        ppm_conv_after_upsample: bool = False,
        ppm_pool: str = "avg",
    ) -> None:
        """
        Args:
            input_shape: the levels the head reads (e.g. res2..res5), any order.
            convs_dim: channels of every conv inside the head.
            pool_scales: output sizes of the PPM's adaptive average pools.
            ppm_conv_after_upsample: run each PPM branch's conv after resizing its pooled map
                (CSAIL's UPerNet) instead of before (mmseg, transformers, the paper's PSPNet).
            ppm_pool: pooling of the PPM bins, "avg" or "prroi" (CSAIL's unified parsing).
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
        ordered = sorted(input_shape, key=lambda name: input_shape[name].stride)
        self.in_features = ordered
        channels = [input_shape[name].channels for name in ordered]
        self.ppm = PPM(
            channels[-1],
            convs_dim,
            pool_scales=pool_scales,
            norm=norm,
            conv_after_upsample=ppm_conv_after_upsample,
            pool=ppm_pool,
        )
        self.bottleneck = ConvNormAct(self.ppm.out_channels, convs_dim, 3, norm=norm)
        self.lateral_convs = nn.ModuleList(
            ConvNormAct(c, convs_dim, 1, norm=norm) for c in channels[:-1]
        )
        self.fpn_convs = nn.ModuleList(
            ConvNormAct(convs_dim, convs_dim, 3, norm=norm) for _ in channels[:-1]
        )
        self.fpn_bottleneck = ConvNormAct(len(channels) * convs_dim, convs_dim, 3, norm=norm)

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> dict:
        return {
            **head_config(cfg, input_shape),
            "pool_scales": cfg.MODEL.SEM_SEG_HEAD.POOL_SCALES,
            "ppm_conv_after_upsample": cfg.MODEL.SEM_SEG_HEAD.PPM_CONV_AFTER_UPSAMPLE,
            "ppm_pool": cfg.MODEL.SEM_SEG_HEAD.PPM_POOL,
        }

    def forward_features(
        self, features: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """features: {name: Tensor (N, C_i, H/s_i, W/s_i)}.

        Returns:
            "ppm": Tensor (N, convs_dim, H/s_top, W/s_top), the PPM bottleneck on the top level;
            "fused": Tensor (N, convs_dim, H/s_0, W/s_0), the fused pyramid at the finest stride;
            "fpn": list of Tensor (N, convs_dim, H/s_i, W/s_i), the FPN levels finest first (the
            last one is "ppm").
        """
        ppm = self.bottleneck(self.ppm(features[self.in_features[-1]]))
        laterals = [conv(features[f]) for f, conv in zip(self.in_features, self.lateral_convs)]
        laterals.append(ppm)
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize_to(laterals[i], laterals[i - 1].shape[-2:])
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals)] + [ppm]
        size = outs[0].shape[-2:]
        fused = self.fpn_bottleneck(torch.cat([resize_to(x, size) for x in outs], dim=1))
        return {"ppm": ppm, "fused": fused, "fpn": outs}

    def layers(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """features: {name: Tensor (N, C_i, H/s_i, W/s_i)}. Returns: Tensor (N, K, H/s_0, W/s_0)."""
        return self.predict(self.forward_features(features)["fused"])
