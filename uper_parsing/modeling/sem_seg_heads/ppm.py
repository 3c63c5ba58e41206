"""Pyramid Pooling Module (PSPNet), shared by PSPHead and UPerNetHead."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...layers import ConvNormAct, resize_to

__all__ = ["PPM"]


class PPM(nn.Module):
    """For each bin b: adaptive average pool to b x b, 1x1 ConvNormAct, resize back to the input
    size; the results are concatenated after the input.

    With a BatchNorm, the 1x1 bin needs more than one image per (Sync)BN batch while training.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        *,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        norm: str = "BN",
    ) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(scale), ConvNormAct(in_channels, channels, 1, norm=norm)
            )
            for scale in pool_scales
        )
        self.out_channels = in_channels + len(pool_scales) * channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: Tensor (N, C, h, w). Returns: Tensor (N, C + len(pool_scales) * channels, h, w)."""
        size = x.shape[-2:]
        return torch.cat([x, *(resize_to(branch(x), size) for branch in self.branches)], dim=1)
