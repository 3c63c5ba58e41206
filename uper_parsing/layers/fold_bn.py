"""Folding inference-mode batch norms into the convolutions before them.

In eval mode a BatchNorm is a per-channel affine map ``y = (x - mean) / sqrt(var + eps) * w + b``;
after a convolution it can be absorbed into that convolution's weight and bias, which removes one
elementwise pass over every normalised activation. The outputs equal the unfolded model's to
floating-point rounding. Only for models that will not train again: the folded model has no
BatchNorm statistics left to update.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import FrozenBatchNorm2d

from .conv import ConvNormAct

__all__ = ["fold_batch_norms"]

_BATCH_NORMS = (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d)
# torchvision's residual blocks: each convK is followed directly by bnK in forward
_BLOCK_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))


def _foldable(conv: nn.Module | None, norm: nn.Module | None) -> bool:
    # exactly nn.Conv2d: a subclass may change its weight in forward (weight standardisation)
    return type(conv) is nn.Conv2d and isinstance(norm, _BATCH_NORMS)


def _conv_norm_pairs(module: nn.Module) -> Iterator[tuple[str, str]]:
    """Names of the (conv, norm) children of ``module`` where the norm is applied directly to the
    conv's output: ConvNormAct, torchvision's residual blocks, and adjacent Sequential entries
    (ResNet stems and shortcut projections)."""
    if isinstance(module, ConvNormAct):
        yield "conv", "norm"
    elif isinstance(module, BasicBlock | Bottleneck):
        yield from ((c, n) for c, n in _BLOCK_PAIRS if hasattr(module, c))
    elif isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
        names = [name for name, _ in module.named_children()]
        yield from zip(names[:-1], names[1:], strict=True)


def _fold(conv: nn.Conv2d, norm: nn.Module) -> None:
    """Absorb the eval-mode ``norm`` into ``conv`` (weight and bias replaced, bias created)."""
    weight, bias = fuse_conv_bn_weights(
        conv.weight,
        conv.bias,
        norm.running_mean,
        norm.running_var,
        norm.eps,
        norm.weight,
        norm.bias,
    )
    memory_format = (
        torch.channels_last
        if conv.weight.is_contiguous(memory_format=torch.channels_last)
        and not conv.weight.is_contiguous()
        else torch.contiguous_format
    )
    conv.weight = nn.Parameter(weight.detach().contiguous(memory_format=memory_format))
    conv.bias = nn.Parameter(bias.detach())


def fold_batch_norms(model: nn.Module) -> int:
    """Fold every BatchNorm (``BatchNorm2d``, ``SyncBatchNorm``, ``FrozenBatchNorm2d``) that
    directly follows a plain ``nn.Conv2d`` into it, in place; the norm becomes ``nn.Identity``.

    Norms elsewhere (after a pooling, a sum, or in unknown module types) are left as they are.
    Returns the number folded.

    Raises:
        ValueError when ``model`` is in training mode (a training BatchNorm normalises with the
        batch's statistics, which folding cannot express).
    """
    if model.training:
        raise ValueError("fold_batch_norms needs a model in eval mode (call model.eval() first)")
    folded = 0
    for module in list(model.modules()):
        for conv_name, norm_name in list(_conv_norm_pairs(module)):
            conv, norm = getattr(module, conv_name, None), getattr(module, norm_name, None)
            if not _foldable(conv, norm):
                continue
            with torch.no_grad():
                _fold(conv, norm)
            setattr(module, norm_name, nn.Identity())
            folded += 1
    return folded
