"""Pyramid Pooling Module (PSPNet), shared by PSPHead and UPerNetHead."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...layers import ConvNormAct, resize_to

__all__ = ["PPM"]


class PPM(nn.Module):
    """For each bin b: adaptive average pool to b x b, 1x1 ConvNormAct, resize back to the input
    size; the results are concatenated after the input. With ``conv_after_upsample`` the
    ConvNormAct runs on the resized map instead (CSAIL's UPerNet decoder; same parameters).

    With a BatchNorm, the 1x1 bin needs more than one image per (Sync)BN batch while training.
    """

    def __init__(
        self,
        in_channels: int,
        channels: int,
        *,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        norm: str = "BN",
        conv_after_upsample: bool = False,
    ) -> None:
        super().__init__()
        self.conv_after_upsample = conv_after_upsample
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
        return torch.cat([x, *(self._branch(pool_conv, x, size) for pool_conv in self.branches)], 1)

    def _branch(self, pool_conv: nn.Sequential, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        pool, conv = pool_conv
        if self.conv_after_upsample:
            return conv(resize_to(pool(x), size))
        return resize_to(conv(pool(x)), size)
