"""Colours of pictures: a fallback class palette, contrast helpers and the panel / ink colours
(RGB, uint8)."""

from __future__ import annotations

import colorsys

import numpy as np

__all__ = ["INK_RGB", "PANEL_RGB", "colormap", "contrast_text_color", "darken", "palette_for"]

PANEL_RGB = (255, 255, 255)  # background of titles, legends and notes
INK_RGB = (30, 30, 30)  # their text, and the outline of name boxes and swatches
# Region outlines and instance boxes are drawn in their colour scaled by this factor.
_EDGE_DARKEN = 0.55

_GOLDEN_RATIO_CONJUGATE = 0.6180339887498949
# (saturation, value) pairs cycled so that neighbouring ids differ in brightness as well as hue.
_SV_LEVELS = ((0.75, 0.95), (0.55, 0.75), (0.9, 0.65), (0.45, 0.9))


def colormap(num_colors: int) -> np.ndarray:
    """``num_colors`` distinct, deterministic colours: (num_colors, 3) uint8 RGB.

    Hues step by the golden ratio so that consecutive ids land far apart on the colour wheel.
    """
    colors = np.empty((num_colors, 3), dtype=np.uint8)
    for index in range(num_colors):
        hue = (0.07 + index * _GOLDEN_RATIO_CONJUGATE) % 1.0
        saturation, value = _SV_LEVELS[index % len(_SV_LEVELS)]
        rgb = colorsys.hsv_to_rgb(hue, saturation, value)
        colors[index] = np.round(np.array(rgb) * 255).astype(np.uint8)
    return colors


def palette_for(stuff_colors: list | None, num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 RGB: the metadata colours, completed by :func:`colormap`."""
    palette = colormap(num_classes)
    if stuff_colors:
        given = np.asarray(stuff_colors, dtype=np.int64).reshape(-1, 3)[:num_classes]
        palette[: len(given)] = np.clip(given, 0, 255).astype(np.uint8)
    return palette


def _relative_luminance(rgb: np.ndarray | tuple[int, int, int]) -> float:
    """WCAG relative luminance of an sRGB colour, in [0, 1]."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(linear @ np.array([0.2126, 0.7152, 0.0722]))


def contrast_text_color(rgb: np.ndarray | tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever has the higher WCAG contrast ratio against ``rgb``."""
    luminance = _relative_luminance(rgb)
    contrast_white = 1.05 / (luminance + 0.05)
    contrast_black = (luminance + 0.05) / 0.05
    return (0, 0, 0) if contrast_black >= contrast_white else (255, 255, 255)


def darken(colors: np.ndarray) -> np.ndarray:
    """The outline colour of each of ``colors`` (..., 3) uint8: 0.55 times as bright."""
    return (colors.astype(np.float32) * _EDGE_DARKEN).astype(np.uint8)
