"""Normalisation layers by name, and the conversion of BatchNorm to FrozenBatchNorm."""

from __future__ import annotations

from torch import nn
from torchvision.ops import FrozenBatchNorm2d

__all__ = ["get_norm", "convert_frozen_batchnorm", "GN_GROUPS"]

GN_GROUPS = 32  # groups of "GN" (Group Normalization paper, detectron2, mmseg)

_NORMS = {
    "BN": nn.BatchNorm2d,
    "SyncBN": nn.SyncBatchNorm,
    "FrozenBN": FrozenBatchNorm2d,
    "GN": lambda channels: nn.GroupNorm(GN_GROUPS, channels),
}


def get_norm(norm: str, out_channels: int) -> nn.Module | None:
    """The normalisation layer named ``norm`` over ``out_channels`` channels.

    Args:
        norm: "" (no norm, returns None), "BN", "SyncBN", "FrozenBN" or "GN" (32 groups).
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
