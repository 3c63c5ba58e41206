"""The semantic-head registry and the builders of the main and the auxiliary head."""

from __future__ import annotations

from torch import nn

from ...layers import ShapeSpec
from ...utils.registry import Registry

__all__ = ["SEM_SEG_HEADS_REGISTRY", "build_sem_seg_head", "build_aux_head"]

SEM_SEG_HEADS_REGISTRY = Registry("SEM_SEG_HEADS")
SEM_SEG_HEADS_REGISTRY.__doc__ = """
Registry of semantic heads: classes built as ``Head(cfg, input_shape)`` that follow the head
contract (``layers`` / ``losses`` / ``forward(features, targets=None)``).
"""


def build_sem_seg_head(cfg, input_shape: dict[str, ShapeSpec]) -> nn.Module:
    """The head ``MODEL.SEM_SEG_HEAD.NAME`` over the backbone outputs ``input_shape``."""
    return SEM_SEG_HEADS_REGISTRY.get(cfg.MODEL.SEM_SEG_HEAD.NAME)(cfg, input_shape)


def build_aux_head(cfg, input_shape: dict[str, ShapeSpec]) -> nn.Module | None:
    """The auxiliary head ``MODEL.AUX_HEAD.NAME``, or None when ``MODEL.AUX_HEAD.ENABLED`` is off.

    The head is built as ``Head(cfg, input_shape, aux=True)``: its ``from_config`` takes
    ``aux`` and then reads ``MODEL.AUX_HEAD`` and reports its loss as ``loss_aux``.
    """
    if not cfg.MODEL.AUX_HEAD.ENABLED:
        return None
    return SEM_SEG_HEADS_REGISTRY.get(cfg.MODEL.AUX_HEAD.NAME)(cfg, input_shape, aux=True)
