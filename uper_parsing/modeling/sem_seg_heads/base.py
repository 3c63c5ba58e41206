"""What every semantic head shares: classifier, loss and the forward contract."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...layers import ShapeSpec
from .losses import sem_seg_cross_entropy

__all__ = ["SemSegHead", "select_features", "coarsest_feature", "head_config"]


def select_features(
    input_shape: dict[str, ShapeSpec], names: Sequence[str]
) -> dict[str, ShapeSpec]:
    """The entries ``names`` of ``input_shape``, finest stride first; an error names any missing."""
    missing = [n for n in names if n not in input_shape]
    if missing:
        raise ValueError(f"Head IN_FEATURES {missing} are not backbone outputs {list(input_shape)}")
    return dict(sorted(((n, input_shape[n]) for n in names), key=lambda item: item[1].stride))


def coarsest_feature(input_shape: dict[str, ShapeSpec]) -> str:
    """The feature with the largest stride; among equal strides (a dilated ResNet's res4 and
    res5) the last one in ``input_shape`` order."""
    return sorted(input_shape, key=lambda name: input_shape[name].stride)[-1]


def head_config(cfg, input_shape: dict[str, ShapeSpec]) -> dict:
    """The ``MODEL.SEM_SEG_HEAD`` arguments every head takes (called by heads' ``from_config``)."""
    head = cfg.MODEL.SEM_SEG_HEAD
    return {
        "input_shape": select_features(input_shape, head.IN_FEATURES),
        "num_classes": head.NUM_CLASSES,
        "ignore_value": head.IGNORE_VALUE,
        "convs_dim": head.CONVS_DIM,
        "norm": head.NORM,
        "dropout": head.DROPOUT,
        "loss_weight": head.LOSS_WEIGHT,
        "class_weights": head.CLASS_WEIGHTS or None,
        "loss_avg_non_ignore": head.LOSS_AVG_NON_IGNORE,
    }


class SemSegHead(nn.Module):
    """Base of the semantic heads: dropout + 1x1 classifier, cross-entropy loss, forward contract.

    Subclasses build their layers, call ``self.predict`` on their last map in ``layers``.
    """

    def __init__(
        self,
        *,
        predictor_in_channels: int,
        num_classes: int,
        ignore_value: int = 255,
        dropout: float = 0.0,
        loss_weight: float = 1.0,
        loss_name: str = "loss_sem_seg",
        class_weights: Sequence[float] | None = None,
        loss_avg_non_ignore: bool = True,
    ) -> None:
        """
        Args:
            num_classes: classifier outputs; 0 builds no dropout and no classifier (a trunk whose
                features other heads read, as the multi-task parser's).
            loss_avg_non_ignore: divide the cross-entropy by the labelled pixels (True) or by
                all pixels (False, mmseg's default); see ``sem_seg_cross_entropy``.
        """
        super().__init__()
        if not loss_name.startswith("loss_"):
            raise ValueError(f"loss_name must start with 'loss_', got '{loss_name}'")
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"{len(class_weights)} class weights for {num_classes} classes")
        self.num_classes = num_classes
        self.ignore_value = ignore_value
        self.loss_weight = loss_weight
        self.loss_name = loss_name
        self.loss_avg_non_ignore = loss_avg_non_ignore
        weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float)
        self.register_buffer("class_weights", weights, persistent=False)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 and num_classes else nn.Identity()
        self.predictor = None
        if num_classes:
            self.predictor = nn.Conv2d(predictor_in_channels, num_classes, kernel_size=1)
            nn.init.normal_(self.predictor.weight, std=0.01)
            nn.init.zeros_(self.predictor.bias)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """x: Tensor (N, C, h, w). Returns: Tensor (N, K, h, w) logits."""
        if self.predictor is None:
            raise RuntimeError(f"{type(self).__name__} was built without a classifier (0 classes)")
        return self.predictor(self.dropout(x))

    def layers(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """features: {name: Tensor (N, C, H/s, W/s)}. Returns: Tensor (N, K, H/s, W/s) logits."""
        raise NotImplementedError

    def losses(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """logits: Tensor (N, K, h, w); targets: Tensor (N, H, W) long.

        Returns: {loss_name: cross-entropy x loss_weight}.
        """
        loss = sem_seg_cross_entropy(
            logits,
            targets,
            ignore_value=self.ignore_value,
            class_weights=self.class_weights,
            avg_non_ignore=self.loss_avg_non_ignore,
        )
        return {self.loss_name: loss * self.loss_weight}

    def forward(
        self, features: dict[str, torch.Tensor], targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Training: ``(None, losses)`` (targets required). Inference: ``(logits, {})`` with logits
        Tensor (N, K, H/s, W/s) at the head's stride s."""
        logits = self.layers(features)
        if self.training:
            if targets is None:
                raise ValueError(f"{type(self).__name__} needs targets while training")
            return None, self.losses(logits, targets)
        return logits, {}
