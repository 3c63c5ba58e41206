"""FCNHead (mmseg fcn_head): a few 3x3 convs and a classifier; PSPNet's auxiliary head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...config import configurable
from ...layers import ConvNormAct, ShapeSpec
from .base import SemSegHead, coarsest_feature, head_config, select_features
from .build import SEM_SEG_HEADS_REGISTRY

__all__ = ["FCNHead"]


@SEM_SEG_HEADS_REGISTRY.register()
class FCNHead(SemSegHead):
    """``num_convs`` x 3x3 ConvNormAct on the coarsest input feature, dropout, 1x1 classifier.

    Logits come out at the stride of that feature.
    """

    @configurable
    def __init__(
        self,
        input_shape: dict[str, ShapeSpec],
        *,
        num_classes: int,
        ignore_value: int = 255,
        convs_dim: int = 256,
        num_convs: int = 1,
        norm: str = "BN",
        dropout: float = 0.1,
        loss_weight: float = 1.0,
        loss_name: str = "loss_sem_seg",
        class_weights: Sequence[float] | None = None,
        loss_avg_non_ignore: bool = True,
    ) -> None:
        """
        Args:
            input_shape: the features the head may read; it reads the coarsest (the last of
                the largest stride).
            num_convs: 3x3 convs before the classifier (0: classify the feature directly).
            convs_dim: channels of those convs.
        """
        in_feature = coarsest_feature(input_shape)
        in_channels = input_shape[in_feature].channels
        super().__init__(
            predictor_in_channels=convs_dim if num_convs > 0 else in_channels,
            num_classes=num_classes,
            ignore_value=ignore_value,
            dropout=dropout,
            loss_weight=loss_weight,
            loss_name=loss_name,
            class_weights=class_weights,
            loss_avg_non_ignore=loss_avg_non_ignore,
        )
        self.in_feature = in_feature
        self.convs = nn.Sequential(
            *(
                ConvNormAct(in_channels if i == 0 else convs_dim, convs_dim, 3, norm=norm)
                for i in range(num_convs)
            )
        )

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec], *, aux: bool = False) -> dict:
        """As the main head reads ``MODEL.SEM_SEG_HEAD``; with ``aux=True`` its features, width,
        depth and loss weight come from ``MODEL.AUX_HEAD`` and its loss is ``loss_aux`` (class
        weights and loss normaliser stay the main head's, as mmseg's configs set both alike)."""
        args = head_config(cfg, input_shape)
        node = cfg.MODEL.AUX_HEAD if aux else cfg.MODEL.SEM_SEG_HEAD
        args.update(
            input_shape=select_features(input_shape, node.IN_FEATURES),
            convs_dim=node.CONVS_DIM,
            num_convs=node.NUM_CONVS,
            loss_weight=node.LOSS_WEIGHT,
            loss_name="loss_aux" if aux else "loss_sem_seg",
        )
        return args

    def layers(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """features[in_feature]: Tensor (N, C, H/s, W/s). Returns: Tensor (N, K, H/s, W/s)."""
        return self.predict(self.convs(features[self.in_feature]))
