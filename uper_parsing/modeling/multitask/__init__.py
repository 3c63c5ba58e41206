"""Heads and losses of the unified perceptual parser (scene, part, material, texture)."""

from .heads import ConvClassifierHead, PartHead, SceneHead
from .losses import check_object_parts, grouped_part_cross_entropy, grouped_part_softmax

__all__ = [
    "SceneHead",
    "PartHead",
    "ConvClassifierHead",
    "check_object_parts",
    "grouped_part_softmax",
    "grouped_part_cross_entropy",
]
