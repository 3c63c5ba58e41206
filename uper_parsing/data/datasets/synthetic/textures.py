"""Procedural textures, one per kind of surface, and colour sampling.

A texture is ``fn(rng, h, w, unit, c1, c2) -> ndarray (h, w, 3) float32`` on the 0..255 scale,
drawn in the coordinates of the region's bounding box; ``unit`` is the pixel size of one unit of a
128-px image (``size / 128``), so patterns keep their look at other resolutions. ``c1`` / ``c2`` are
RGB colours (3,) float32: the base colour and a contrasting shade of it.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable

import cv2
import numpy as np

from .spec import ColorSpec

__all__ = ["TEXTURES", "sample_colors", "smooth_noise"]

Generator = np.random.Generator
Color = np.ndarray  # (3,) float32 RGB on the 0..255 scale
Texture = Callable[[Generator, int, int, float, Color, Color], np.ndarray]


def sample_colors(rng: np.random.Generator, spec: ColorSpec) -> tuple[np.ndarray, np.ndarray]:
    """A base colour from ``spec`` and a contrasting shade of it; each RGB (3,) float32, 0..255."""
    centre = spec.alt_hue if rng.random() < spec.alt_prob else spec.hue
    hue = (centre + rng.uniform(-spec.spread, spec.spread)) % 360.0
    sat = rng.uniform(*spec.sat)
    val = rng.uniform(*spec.val)
    shift = rng.uniform(0.18, 0.35) * (1.0 if val < 0.55 else -1.0)
    hue2 = (hue + rng.uniform(-20.0, 20.0)) % 360.0
    sat2 = float(np.clip(sat + rng.uniform(-0.15, 0.15), 0.0, 1.0))
    return _hsv(hue, sat, val), _hsv(hue2, sat2, float(np.clip(val + shift, 0.03, 1.0)))


def _hsv(hue: float, sat: float, val: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue / 360.0, sat, val), dtype=np.float32) * 255.0


def _mix(c1: np.ndarray, c2: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-pixel blend: (h, w) weights in [0, 1] -> (h, w, 3)."""
    t = t.astype(np.float32)[..., None]
    return c1 * (1.0 - t) + c2 * t


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates, (h, 1) and (1, w) float32."""
    return np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth random field in [0, 1], varying over about ``cell`` pixels. Returns (h, w) float32."""
    gh, gw = int(h / cell) + 3, int(w / cell) + 3
    coarse = rng.random((gh, gw), dtype=np.float32)
    big = cv2.resize(coarse, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    return np.clip(big[:h, :w], 0.0, 1.0)


def _sky(rng: Generator, h: int, w: int, unit: float, c1: Color, c2: Color) -> np.ndarray:
    """Vertical gradient (darker zenith, lighter horizon) with soft clouds."""
    y, _ = _grid(h, w)
    horizon = np.clip(c1 * 0.55 + 255.0 * 0.45, 0, 255)
    t = np.broadcast_to((y / max(h - 1, 1)) ** 0.8, (h, w))
    base = _mix(c1, horizon, t)
    clouds = np.clip((smooth_noise(rng, h, w, 20 * unit) - 0.55) * 3.0, 0.0, 1.0)[..., None]
    cloud_color = np.minimum(horizon * 1.08, 255.0)
    return base + (cloud_color - base) * clouds


def _bricks(rng: Generator, h: int, w: int, unit: float, c1: Color, c2: Color) -> np.ndarray:
    """Staggered bricks with mortar lines and a shade per brick."""
    y, x = _grid(h, w)
    bh = rng.uniform(7.0, 9.0) * unit
    bw = bh * rng.uniform(2.0, 2.6)
    mortar = max(1.0, 1.3 * unit)
    row = np.floor(y / bh)
    xs = x + (row % 2) * bw / 2
    col = np.floor(xs / bw)
    shade = rng.uniform(-0.12, 0.12, size=64).astype(np.float32)
    brick = c1 * (1.0 + shade[((row * 7 + col * 13) % 64).astype(np.int64)])[..., None]
    is_mortar = ((y % bh) < mortar) | ((xs % bw) < mortar)
    return np.where(is_mortar[..., None], c2, brick)


def _tiles(rng: Generator, h: int, w: int, unit: float, c1: Color, c2: Color) -> np.ndarray:
    """Checkerboard of square tiles with thin grout lines."""
    y, x = _grid(h, w)
    size = rng.uniform(10.0, 14.0) * unit
    t = ((np.floor(y / size) + np.floor(x / size)) % 2).astype(np.float32)
    img = _mix(c1, c1 * 0.45 + c2 * 0.55, t)
    grout = ((y % size) < max(1.0, unit)) | ((x % size) < max(1.0, unit))
    return np.where(grout[..., None], c2 * 0.6, img)


def _grass(rng: Generator, h: int, w: int, unit: float, c1: Color, c2: Color) -> np.ndarray:
    """Fine vertical blade streaks over a slowly varying field."""
    fine = rng.random((h, w), dtype=np.float32)
    k = max(3, int(round(5 * unit)) | 1)
    streaks = cv2.blur(fine, (1, k))
    streaks = (streaks - streaks.min()) / max(float(np.ptp(streaks)), 1e-6)
    t = 0.7 * streaks + 0.3 * smooth_noise(rng, h, w, 16 * unit)
    return _mix(c1, c2, t)


def _waves(rng: Generator, h: int, w: int, unit: float, c1: Color, c2: Color) -> np.ndarray:
    """Horizontal wavy bands with sparkling highlights."""
    y, x = _grid(h, w)
    period = rng.uniform(5.0, 7.0) * unit
    wobble = 0.35 * np.sin(2 * np.pi * x / (period * rng.uniform(5, 8)) + rng.uniform(0, 6.3))
    t = 0.5 + 0.5 * np.sin(2 * np.pi * (y / period + wobble))
    img = _mix(c1, c2, t)
    sparkle = cv2.blur(rng.random((h, w), dtype=np.float32), (max(3, int(4 * unit)), 1)) > 0.72
    return np.where(sparkle[..., None], np.minimum(c1 * 0.4 + 170.0, 255.0), img)


def _bark(rng: Generator, h: int, w: int, unit: float, c1: Color, c2: Color) -> np.ndarray:
    """Irregular vertical stripes."""
    y, x = _grid(h, w)
    period = rng.uniform(3.0, 4.5) * unit
    jitter = smooth_noise(rng, h, w, 6 * unit) * 2.0
    t = (np.sin(2 * np.pi * x / period + jitter) > 0.2).astype(np.float32)
    return _mix(c1, c2, t)


def _leaves(rng: Generator, h: int, w: int, unit: float, c1: Color, c2: Color) -> np.ndarray:
    """Dense spots of two shades (leaf clusters)."""
    spots = np.zeros((h, w), np.float32)
    count = int(h * w / (18 * unit * unit)) + 1
    cx = rng.integers(0, max(w, 1), count)
    cy = rng.integers(0, max(h, 1), count)
    radius = np.maximum(1, np.round(rng.uniform(1.2, 2.6, count) * unit)).astype(int)
    for x0, y0, r in zip(cx.tolist(), cy.tolist(), radius.tolist()):
        cv2.circle(spots, (x0, y0), r, 1.0, -1)
    dark = smooth_noise(rng, h, w, 10 * unit) * 0.35
    return _mix(c1, c2, spots) * (1.0 - dark)[..., None]


def _siding(rng: Generator, h: int, w: int, unit: float, c1: Color, c2: Color) -> np.ndarray:
    """Horizontal clapboards: sharp shadow line at the bottom of each board."""
    y, _ = _grid(h, w)
    period = rng.uniform(4.0, 5.5) * unit
    t = np.broadcast_to(((y % period) > period - max(1.0, 1.2 * unit)).astype(np.float32), (h, w))
    return _mix(c1, c2, t)


def _shingles(rng: Generator, h: int, w: int, unit: float, c1: Color, c2: Color) -> np.ndarray:
    """Diagonal stripes of roof shingles."""
    y, x = _grid(h, w)
    period = rng.uniform(5.0, 7.0) * unit
    direction = 1.0 if rng.random() < 0.5 else -1.0
    t = (((x * direction + y) % period) < period * 0.45).astype(np.float32)
    return _mix(c1, c2, t)


def _glass(rng: Generator, h: int, w: int, unit: float, c1: Color, c2: Color) -> np.ndarray:
    """Light pane with a diagonal reflection and a cross-shaped frame."""
    y, x = _grid(h, w)
    t = np.clip((x / max(w, 1) + y / max(h, 1)) * 0.5, 0, 1)
    img = _mix(c1, np.minimum(c1 + 60.0, 255.0), t)
    bar = max(1.0, 1.5 * unit)
    frame = (np.abs(y - h / 2) < bar) | (np.abs(x - w / 2) < bar)
    frame |= (y < bar) | (y >= h - bar) | (x < bar) | (x >= w - bar)
    return np.where(frame[..., None], c2 * 0.5, img)


def _planks(rng: Generator, h: int, w: int, unit: float, c1: Color, c2: Color) -> np.ndarray:
    """Vertical planks with a knob."""
    y, x = _grid(h, w)
    period = rng.uniform(3.5, 5.0) * unit
    t = np.broadcast_to(((x % period) < max(1.0, unit)).astype(np.float32), (h, w))
    img = _mix(c1, c2, t).copy()
    r = max(1, int(round(1.5 * unit)))
    cv2.circle(img, (int(w * 0.75), int(h * 0.55)), r, (230.0, 210.0, 80.0), -1)
    return img


def _metallic(rng: Generator, h: int, w: int, unit: float, c1: Color, c2: Color) -> np.ndarray:
    """Glossy paint: vertical shading with a bright specular band."""
    y, _ = _grid(h, w)
    v = y / max(h - 1, 1)
    centre = rng.uniform(0.25, 0.4)
    shine = np.exp(-(((v - centre) / 0.06) ** 2))
    shade = 1.1 - 0.45 * v
    img = c1 * shade[..., None] + (255.0 - c1 * shade[..., None]) * 0.7 * shine[..., None]
    return np.broadcast_to(img, (h, w, 3))


def _dark_glass(rng: Generator, h: int, w: int, unit: float, c1: Color, c2: Color) -> np.ndarray:
    """Dark tinted glass with one slanted reflection stripe."""
    y, x = _grid(h, w)
    pos = rng.uniform(0.2, 0.6) * w
    stripe = np.abs((x - pos) + 0.6 * y) < max(1.5, 2.0 * unit)
    return np.where(stripe[..., None], np.minimum(c1 + 90.0, 255.0), np.broadcast_to(c1, (h, w, 3)))


def _wheel(rng: Generator, h: int, w: int, unit: float, c1: Color, c2: Color) -> np.ndarray:
    """Dark tyre around a light hub with spokes-like rings (centred in the box)."""
    y, x = _grid(h, w)
    r = np.sqrt((y - (h - 1) / 2) ** 2 + (x - (w - 1) / 2) ** 2) / max(min(h, w) / 2, 1)
    hub = np.array(rng.uniform(140, 220, 3), dtype=np.float32)
    ring = (np.sin(r * 22.0) > 0.3) & (r < 0.55)
    img = np.where((r < 0.55)[..., None], hub, c1)
    return np.where(ring[..., None], hub * 0.55, img)


def _cylinder(rng: Generator, h: int, w: int, unit: float, c1: Color, c2: Color) -> np.ndarray:
    """Metal cylinder seen from the side: bright centre line, dark edges."""
    _, x = _grid(h, w)
    d = np.abs(x - (w - 1) / 2) / max(w / 2, 1)
    shade = 1.25 - 0.75 * d**2
    return np.broadcast_to(np.clip(c1 * shade[..., None] + 25.0, 0, 255), (h, w, 3))


def _fabric(rng: Generator, h: int, w: int, unit: float, c1: Color, c2: Color) -> np.ndarray:
    """Pleated fabric (vertical folds) with a glow towards the bottom edge."""
    y, x = _grid(h, w)
    period = rng.uniform(4.0, 5.5) * unit
    pleats = np.broadcast_to(0.5 + 0.5 * np.sin(2 * np.pi * x / period), (h, w))
    img = _mix(c1, c1 * 0.6 + c2 * 0.4, pleats)
    glow = np.broadcast_to((y / max(h - 1, 1)) ** 2 * 0.35, (h, w))
    return img + (255.0 - img) * glow[..., None]


def _wood_grain(rng: Generator, h: int, w: int, unit: float, c1: Color, c2: Color) -> np.ndarray:
    """Long horizontal grain lines."""
    y, _ = _grid(h, w)
    period = rng.uniform(4.0, 6.0) * unit
    warp = smooth_noise(rng, h, w, 12 * unit) * 3.0
    t = 0.5 + 0.5 * np.sin(2 * np.pi * y / period + warp)
    return _mix(c1, c2, t**3)


def _wood_grain_v(rng: Generator, h: int, w: int, unit: float, c1: Color, c2: Color) -> np.ndarray:
    """Grain running along a vertical piece (table legs)."""
    return np.ascontiguousarray(_wood_grain(rng, w, h, unit, c1, c2).transpose(1, 0, 2))


def _noise_blob(rng: Generator, h: int, w: int, unit: float, c1: Color, c2: Color) -> np.ndarray:
    """Unstructured clutter (unlabelled objects)."""
    return _mix(c1, c2, smooth_noise(rng, h, w, 4 * unit))


TEXTURES: dict[str, Texture] = {
    "sky": _sky,
    "bricks": _bricks,
    "tiles": _tiles,
    "grass": _grass,
    "waves": _waves,
    "bark": _bark,
    "leaves": _leaves,
    "siding": _siding,
    "shingles": _shingles,
    "glass": _glass,
    "planks": _planks,
    "metallic": _metallic,
    "dark_glass": _dark_glass,
    "wheel": _wheel,
    "cylinder": _cylinder,
    "fabric": _fabric,
    "wood_grain": _wood_grain,
    "wood_grain_v": _wood_grain_v,
    "noise_blob": _noise_blob,
}
