"""Pictures: one :class:`Visualizer` draws semantic, panoptic and multi-task predictions and the
ground truth of any dataset dict over an image, and lays every picture out with ``compose``."""

from .colormap import colormap, contrast_text_color, palette_for
from .layout import LegendEntry, Panel
from .multitask import part_label_map
from .panoptic import segment_class_name, segment_label
from .visualizer import VisImage, Visualizer, save_image

__all__ = [
    "LegendEntry",
    "Panel",
    "VisImage",
    "Visualizer",
    "colormap",
    "contrast_text_color",
    "palette_for",
    "part_label_map",
    "save_image",
    "segment_class_name",
    "segment_label",
]
