"""The backbone contract every feature extractor follows."""

from abc import ABCMeta, abstractmethod

import torch
from torch import nn

from ...layers import ShapeSpec

__all__ = ["Backbone"]


class Backbone(nn.Module, metaclass=ABCMeta):
    """A network that maps an image batch to named feature maps.

    Subclasses set ``_out_features``, ``_out_feature_channels`` and ``_out_feature_strides``
    (dicts keyed by feature name) or override :meth:`output_shape`.
    """

    _out_features: list[str]
    _out_feature_channels: dict[str, int]
    _out_feature_strides: dict[str, int]

    @abstractmethod
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: Tensor (N, C, H, W). Returns {name: Tensor (N, C_name, H/stride, W/stride)}."""

    @property
    def size_divisibility(self) -> int:
        """Input height and width must be multiples of this (0 = no constraint)."""
        return 0

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
            for name in self._out_features
        }
