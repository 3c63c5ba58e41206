"""Convolution + normalisation + activation, the building block of every head."""

from __future__ import annotations

import torch
from torch import nn

from .norm import get_norm

__all__ = ["ConvNormAct"]


class ConvNormAct(nn.Module):
    """Conv2d -> norm (optional) -> ReLU (optional).

    The conv has no bias when a norm follows it. Padding defaults to "same" for odd kernels
    (``dilation * (kernel_size - 1) // 2``), so stride 1 keeps the spatial size.
    Convs followed by ReLU use He (fan-out) init; convs without activation use
    ``kaiming_uniform_(a=1)`` (detectron2's ``c2_xavier_fill``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int | None = None,
        dilation: int = 1,
        norm: str = "",
        activation: bool = True,
    ) -> None:
        super().__init__()
        if padding is None:
            padding = dilation * (kernel_size - 1) // 2
        norm_layer = get_norm(norm, out_channels)
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            bias=norm_layer is None,
        )
        self.norm = norm_layer if norm_layer is not None else nn.Identity()
        self.act = nn.ReLU(inplace=True) if activation else nn.Identity()
        if activation:
            nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        else:
            nn.init.kaiming_uniform_(self.conv.weight, a=1)
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)

    @property
    def out_channels(self) -> int:
        return self.conv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: Tensor (N, C_in, H, W). Returns: Tensor (N, C_out, H / stride, W / stride)."""
        return self.act(self.norm(self.conv(x)))
