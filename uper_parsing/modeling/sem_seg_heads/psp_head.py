"""PSPHead (mmseg psp_head): pyramid pooling on the last feature, bottleneck, classifier."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...config import configurable
from ...layers import ConvNormAct, ShapeSpec
from .base import SemSegHead, coarsest_feature, head_config
from .build import SEM_SEG_HEADS_REGISTRY
from .ppm import PPM

__all__ = ["PSPHead"]


@SEM_SEG_HEADS_REGISTRY.register()
class PSPHead(SemSegHead):
    """PPM (bins ``pool_scales``) on the coarsest input feature, concatenated with it, 3x3
    ConvNormAct bottleneck to ``convs_dim``, dropout, 1x1 classifier.

    Logits come out at the stride of that feature (8 on a dilated ResNet-D8).
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
        ppm_pool: str = "avg",
    ) -> None:
        """
        Args:
            input_shape: the features the head may read; it reads the coarsest (the last of
                the largest stride).
            convs_dim: channels of each pooling branch and of the bottleneck.
            pool_scales: output sizes of the pyramid pools.
            ppm_pool: pooling of the pyramid bins, "avg" or "prroi" (see ``PPM``).
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
        self.in_feature = coarsest_feature(input_shape)
        in_channels = input_shape[self.in_feature].channels
        self.ppm = PPM(in_channels, convs_dim, pool_scales=pool_scales, norm=norm, pool=ppm_pool)
        self.bottleneck = ConvNormAct(self.ppm.out_channels, convs_dim, 3, norm=norm)

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]) -> dict:
        return {
            **head_config(cfg, input_shape),
            "pool_scales": cfg.MODEL.SEM_SEG_HEAD.POOL_SCALES,
            "ppm_pool": cfg.MODEL.SEM_SEG_HEAD.PPM_POOL,
        }

    def layers(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """features[in_feature]: Tensor (N, C, H/s, W/s). Returns: Tensor (N, K, H/s, W/s)."""
        return self.predict(self.bottleneck(self.ppm(features[self.in_feature])))
