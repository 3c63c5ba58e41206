"""Normalisation layers by name, and the conversion of BatchNorm to FrozenBatchNorm."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

__all__ = ["get_norm", "convert_frozen_batchnorm", "LayerNorm2d", "GN_GROUPS"]

GN_GROUPS = 32  # groups of "GN" (Group Normalization paper, detectron2, mmseg)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of each pixel of an (N, C, H, W) tensor.

    The ConvNeXt "channels-first" LayerNorm (timm's ``LayerNorm2d``, mmpretrain's ``LN2d``,
    transformers' ``ConvNextLayerNorm(data_format="channels_first")``), with their eps of 1e-6.
    Parameters ``weight`` and ``bias`` of shape (C,).
    """

    def __init__(self, num_channels: int, *, eps: float = 1e-6) -> None:
        super().__init__(num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: Tensor (N, C, H, W). Returns Tensor (N, C, H, W)."""
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


_NORMS = {
    "BN": nn.BatchNorm2d,
    "SyncBN": nn.SyncBatchNorm,
    "FrozenBN": FrozenBatchNorm2d,
    "GN": lambda channels: nn.GroupNorm(GN_GROUPS, channels),
    "LN": LayerNorm2d,
}


def get_norm(norm: str, out_channels: int) -> nn.Module | None:
    """The normalisation layer named ``norm`` over ``out_channels`` channels.

    Args:
        norm: "" (no norm, returns None), "BN", "SyncBN", "FrozenBN", "GN" (32 groups) or "LN"
            (``LayerNorm2d``: a LayerNorm over the channels of each pixel, eps 1e-6).
        out_channels: channels C of the (N, C, H, W) input it normalises.
    """
    if norm == "":
        return None
    if norm not in _NORMS:
        raise ValueError(f"Unknown norm '{norm}'; expected one of '', {', '.join(_NORMS)}")
    if norm == "GN" and out_channels % GN_GROUPS != 0:
        raise ValueError(f"GN needs channels divisible by {GN_GROUPS}, got {out_channels}")
    return _NORMS[norm](out_channels)


def convert_frozen_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d / SyncBatchNorm in ``module`` by a FrozenBatchNorm2d.

    Statistics and affine parameters are copied, so the output is unchanged in eval mode.
    Returns the converted module (a new object when ``module`` itself is a BatchNorm).
    """
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        frozen = FrozenBatchNorm2d(module.num_features, eps=module.eps)
        if module.affine:
            frozen.weight.copy_(module.weight.detach())
            frozen.bias.copy_(module.bias.detach())
        if module.track_running_stats:
            frozen.running_mean.copy_(module.running_mean)
            frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        converted = convert_frozen_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module
