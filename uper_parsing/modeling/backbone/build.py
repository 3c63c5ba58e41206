"""The backbone registry and ``build_backbone``."""

from __future__ import annotations

from ...layers import ShapeSpec
from ...utils.registry import Registry
from .backbone import Backbone

__all__ = ["BACKBONE_REGISTRY", "build_backbone"]

BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.__doc__ = """
Registry of backbone builders, functions
``build_X_backbone(cfg, input_shape: ShapeSpec) -> Backbone``.
"""


def build_backbone(cfg, input_shape: ShapeSpec | None = None) -> Backbone:
    """Build ``cfg.MODEL.BACKBONE.NAME``; the input has ``len(cfg.MODEL.PIXEL_MEAN)`` channels."""
    if input_shape is None:
        input_shape = ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))
    backbone = BACKBONE_REGISTRY.get(cfg.MODEL.BACKBONE.NAME)(cfg, input_shape)
    if not isinstance(backbone, Backbone):
        raise TypeError(f"{cfg.MODEL.BACKBONE.NAME} returned {type(backbone)}, not a Backbone")
    return backbone
