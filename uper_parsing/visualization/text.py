"""Text in pictures: one TrueType font rendered with Pillow, and sizes that scale with the picture.

The font is Source Sans Pro (Latin, Greek and Cyrillic), shipped by the ``font-source-sans-pro``
package. Pillow's basic layout draws every string left to right, the same way on every machine; a
character the font lacks is drawn as the font's missing-glyph box, and a non-printable one (control
characters, lone surrogates) is replaced by U+FFFD first, so no class name can make drawing fail.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["FONT_FILE", "Style", "font_path", "load_font", "printable"]

FONT_PACKAGE = "font_source_sans_pro"
FONT_FILE = "SourceSansPro-Regular.ttf"
_REPLACEMENT = "\ufffd"


def font_path() -> str:
    """Path of the TrueType file every picture's text is drawn with.

    Raises:
        FileNotFoundError: the ``font-source-sans-pro`` package (a dependency) is not installed.
    """
    try:
        path = importlib.resources.files(FONT_PACKAGE) / "files" / FONT_FILE
    except ModuleNotFoundError as err:
        raise FileNotFoundError(
            f"Font {FONT_FILE} not found: install the font-source-sans-pro package ({err})"
        ) from err
    if not path.is_file():
        raise FileNotFoundError(f"Font {path} not found: reinstall font-source-sans-pro")
    return str(path)


@functools.lru_cache(maxsize=64)
def load_font(size_px: int) -> ImageFont.FreeTypeFont:
    """The picture font at ``size_px`` pixels per em (cached), with Pillow's basic layout."""
    return ImageFont.truetype(font_path(), size_px, layout_engine=ImageFont.Layout.BASIC)


def printable(text: object) -> str:
    """``str(text)`` with every non-printable character (control, format, surrogate, line
    separator) replaced by U+FFFD."""
    return "".join(c if c.isprintable() else _REPLACEMENT for c in str(text))


@dataclass(frozen=True)
class Style:
    """Sizes that scale with the picture (all in output pixels).

    Attributes:
        font_px: text size (pixels per em) of names and legends; titles are 1.15 times larger.
        line_width: width of region outlines.
        box_width: width of instance boxes.
        pad: the unit of every margin and gap.
    """

    font_px: int
    line_width: int
    box_width: int
    pad: int

    @classmethod
    def for_short_side(cls, short_side: int) -> Style:
        """The sizes for a picture whose short side is ``short_side`` pixels."""
        scale = float(np.clip(short_side / 800.0, 0.5, 1.2))
        return cls(
            font_px=round(28 * scale),
            line_width=max(1, round(short_side / 400)),
            box_width=max(1, round(short_side / 200)),
            pad=max(3, round(6 * scale)),
        )

    def font(self, scale: float = 1.0) -> ImageFont.FreeTypeFont:
        return load_font(max(6, round(self.font_px * scale)))

    def text_size(self, text: str, scale: float = 1.0) -> tuple[int, int]:
        """(width, line height) in pixels of ``text``; the line height is the same for every
        text of one size (ascent + descent of the font)."""
        font = self.font(scale)
        ascent, descent = font.getmetrics()
        return math.ceil(font.getlength(printable(text))), ascent + descent

    def put_text(
        self,
        img: np.ndarray,
        text: str,
        origin: tuple[int, int],
        color: tuple[int, int, int],
        scale: float = 1.0,
    ) -> None:
        """Blend ``text`` in ``color`` into ``img`` (H, W, 3) uint8, the top-left corner of its
        line box at ``origin`` (x, y); whatever falls outside ``img`` is clipped."""
        text = printable(text)
        width, height = self.text_size(text, scale)
        mask = Image.new("L", (width + 2, height))
        ImageDraw.Draw(mask).text((0, 0), text, fill=255, font=self.font(scale))
        _blend_mask(img, np.asarray(mask, dtype=np.float32) / 255.0, origin, color)


def _blend_mask(
    img: np.ndarray, alpha: np.ndarray, origin: tuple[int, int], color: tuple[int, int, int]
) -> None:
    """``img = img * (1 - alpha) + color * alpha`` over the (h, w) ``alpha`` at ``origin``."""
    x, y = origin
    x0, y0 = max(x, 0), max(y, 0)
    x1 = min(x + alpha.shape[1], img.shape[1])
    y1 = min(y + alpha.shape[0], img.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    a = alpha[y0 - y : y1 - y, x0 - x : x1 - x, None]
    region = img[y0:y1, x0:x1].astype(np.float32)
    blended = region * (1.0 - a) + np.asarray(color, np.float32) * a
    img[y0:y1, x0:x1] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
