"""The task heads of the unified perceptual parser (besides the object head, UPerNet's own)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...layers import ConvNormAct
from .losses import check_object_parts, grouped_part_softmax

__all__ = ["SceneHead", "PartHead", "ConvClassifierHead"]


def _classifier(in_channels: int, num_classes: int) -> nn.Conv2d:
    """1x1 conv classifier initialised like the semantic heads' (normal std 0.01, zero bias)."""
    conv = nn.Conv2d(in_channels, num_classes, kernel_size=1)
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.zeros_(conv.bias)
    return conv


class SceneHead(nn.Module):
    """3x3 ConvNormAct, global average pool, linear classifier (image-level scene logits)."""

    def __init__(self, in_channels: int, *, num_classes: int, channels: int, norm: str) -> None:
        super().__init__()
        self.conv = ConvNormAct(in_channels, channels, 3, norm=norm)
        self.classifier = nn.Linear(channels, num_classes)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: Tensor (N, C, h, w). Returns: Tensor (N, K) logits."""
        return self.classifier(self.conv(x).mean(dim=(-2, -1)))


class ConvClassifierHead(nn.Module):
    """``num_convs`` x 3x3 ConvNormAct (``channels`` wide), then a 1x1 classifier (per-pixel
    logits). The object, part and material heads (one conv, CSAIL's ``conv3x3_bn_relu`` + 1x1;
    none: a bare 1x1) and the texture head (four 128-channel convs)."""

    def __init__(
        self, in_channels: int, *, num_classes: int, channels: int, num_convs: int, norm: str
    ) -> None:
        super().__init__()
        if num_convs < 0:
            raise ValueError(f"num_convs must be >= 0, got {num_convs}")
        widths = [in_channels] + [channels] * num_convs
        self.convs = nn.Sequential(
            *(ConvNormAct(c_in, c_out, 3, norm=norm) for c_in, c_out in zip(widths, widths[1:]))
        )
        self.classifier = _classifier(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: Tensor (N, C, h, w). Returns: Tensor (N, K, h, w) logits."""
        return self.classifier(self.convs(x))


class PartHead(ConvClassifierHead):
    """A :class:`ConvClassifierHead` with one output channel per part (global part id); the
    channels are grouped per object by ``object_parts`` and normalised within each group
    (``grouped_part_softmax``)."""

    def __init__(
        self,
        in_channels: int,
        *,
        object_parts: Sequence[Sequence[int]],
        channels: int = 0,
        num_convs: int = 0,
        norm: str = "",
    ) -> None:
        """
        Args:
            object_parts: for each object index, the global part ids it owns ("-" first; ``[]``
                for none); together a partition of 0..P-1.
            channels, num_convs, norm: the 3x3 ConvNormActs before the classifier.
        """
        num_parts = check_object_parts(object_parts)
        super().__init__(
            in_channels, num_classes=num_parts, channels=channels, num_convs=num_convs, norm=norm
        )
        self.num_parts = num_parts
        self.object_parts = [list(parts) for parts in object_parts]

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """logits: Tensor (N, P, h, w). Returns: Tensor (N, P, h, w), a softmax per object."""
        return grouped_part_softmax(logits, self.object_parts)
