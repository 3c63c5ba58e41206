"""Shapes of the thing classes, drawn as pixel-exact part masks.

Every drawer is ``fn(rng, hw, x, base_y, s) -> list[(part name, mask (H, W) uint8)]``: ``x`` is the
horizontal centre, ``base_y`` the row the thing stands on, ``s`` the reference length in pixels
(image side times a depth factor). Parts are listed in paint order; a later part covers an earlier
one where they overlap (a crown covers the top of its trunk).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

__all__ = ["SHAPES", "draw_blob"]

PartMasks = list[tuple[str, np.ndarray]]


def _poly(hw: tuple[int, int], *polygons: np.ndarray) -> np.ndarray:
    mask = np.zeros(hw, np.uint8)
    cv2.fillPoly(mask, [np.round(p).astype(np.int32) for p in polygons], 1)
    return mask


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def _circles(hw: tuple[int, int], circles: list[tuple[float, float, float]]) -> np.ndarray:
    mask = np.zeros(hw, np.uint8)
    for cx, cy, r in circles:
        cv2.circle(mask, (round(cx), round(cy)), max(1, round(r)), 1, -1)
    return mask


def draw_tree(
    rng: np.random.Generator, hw: tuple[int, int], x: float, base_y: float, s: float
) -> PartMasks:
    """Tapered trunk under a round (blobby) or pine crown."""
    trunk_w, trunk_h = s * rng.uniform(0.065, 0.085), s * rng.uniform(0.16, 0.26)
    r = s * rng.uniform(0.12, 0.17)
    top = base_y - trunk_h
    trunk = np.array(
        [[x - trunk_w / 2, base_y], [x + trunk_w / 2, base_y], [x + trunk_w * 0.35, top - r * 0.5],
         [x - trunk_w * 0.35, top - r * 0.5]]
    )  # fmt: skip
    if rng.random() < 0.3:
        tiers = [
            np.array([[x - r * k, top - r * (1.1 - k)], [x + r * k, top - r * (1.1 - k)],
                      [x, top - r * (2.6 - k)]])
            for k in (1.15, 0.9, 0.65)
        ]  # fmt: skip
        crown = _poly(hw, *tiers)
    else:
        cy = top - r * 0.8
        circles = [(x, cy, r)]
        for _ in range(int(rng.integers(2, 4))):
            angle = rng.uniform(np.pi, 2 * np.pi)
            circles.append(
                (
                    x + 0.6 * r * np.cos(angle),
                    cy + 0.5 * r * np.sin(angle),
                    r * rng.uniform(0.55, 0.8),
                )
            )
        crown = _circles(hw, circles)
    return [("trunk", _poly(hw, trunk)), ("crown", crown)]


def draw_house(
    rng: np.random.Generator, hw: tuple[int, int], x: float, base_y: float, s: float
) -> PartMasks:
    """Box body, pitched or hipped roof, a door and windows in a row of columns."""
    bw, bh = s * rng.uniform(0.34, 0.5), s * rng.uniform(0.22, 0.3)
    roof_h, over = s * rng.uniform(0.1, 0.16), bw * rng.uniform(0.04, 0.1)
    x0, y0 = x - bw / 2, base_y - bh
    if rng.random() < 0.6:
        roof = np.array([[x0 - over, y0], [x0 + bw + over, y0], [x, y0 - roof_h]])
    else:
        roof = np.array(
            [[x0 - over, y0], [x0 + bw + over, y0], [x0 + bw * 0.75, y0 - roof_h],
             [x0 + bw * 0.25, y0 - roof_h]]
        )  # fmt: skip
    cols = int(rng.integers(2, 4))
    col_w = bw / cols
    door_col = int(rng.integers(cols))
    win_w = col_w * 0.55
    win_h = min(win_w * rng.uniform(0.9, 1.25), bh * 0.45)
    windows, door = [], None
    for c in range(cols):
        cx = x0 + col_w * (c + 0.5)
        if c == door_col:
            door = _rect(cx - col_w * 0.25, base_y - bh * 0.6, cx + col_w * 0.25, base_y)
        else:
            windows.append(
                _rect(cx - win_w / 2, y0 + bh * 0.18, cx + win_w / 2, y0 + bh * 0.18 + win_h)
            )
    return [
        ("body", _poly(hw, _rect(x0, y0, x0 + bw, base_y))),
        ("roof", _poly(hw, roof)),
        ("window", _poly(hw, *windows)),
        ("door", _poly(hw, door)),
    ]


def draw_car(
    rng: np.random.Generator, hw: tuple[int, int], x: float, base_y: float, s: float
) -> PartMasks:
    """Side view: lower body, cabin with two windows, two wheels; faces left or right."""
    length = s * rng.uniform(0.36, 0.48)
    r = length * rng.uniform(0.12, 0.14)
    low_h, cab_h = length * rng.uniform(0.16, 0.2), length * rng.uniform(0.14, 0.18)
    bottom = base_y - r * 0.45
    low_top = bottom - low_h
    # unit shapes in (u, y) with u in [0, 1] along the car; flipped for cars facing left
    lower = [(0.0, bottom), (1.0, bottom), (1.0, low_top + low_h * 0.35), (0.94, low_top),
             (0.04, low_top), (0.0, low_top + low_h * 0.3)]  # fmt: skip
    front, back = rng.uniform(0.62, 0.7), rng.uniform(0.26, 0.32)
    cabin = [(0.16, low_top), (0.84, low_top), (front, low_top - cab_h), (back, low_top - cab_h)]
    win_top = low_top - cab_h + 0.035 * length
    win_a = [(0.22, low_top), (0.485, low_top), (0.485, win_top), (back + 0.03, win_top)]
    win_b = [(0.515, low_top), (0.77, low_top), (front - 0.02, win_top), (0.515, win_top)]
    flip = rng.random() < 0.5
    x0 = x - length / 2

    def place(points: list[tuple[float, float]]) -> np.ndarray:
        return np.array([[x0 + length * ((1 - u) if flip else u), y] for u, y in points])

    wheels = [(x0 + length * u, base_y - r, r) for u in (0.2, 0.8)]
    return [
        ("body", _poly(hw, place(lower), place(cabin))),
        ("window", _poly(hw, place(win_a), place(win_b))),
        ("wheel", _circles(hw, wheels)),
    ]


def draw_lamp(
    rng: np.random.Generator, hw: tuple[int, int], x: float, base_y: float, s: float
) -> PartMasks:
    """Standing lamp: flat base, pole, trapezoid shade."""
    height = s * rng.uniform(0.5, 0.68)
    shade_w = s * rng.uniform(0.24, 0.3)
    shade_h = shade_w * rng.uniform(0.6, 0.8)
    pole_w = max(2.0, s * rng.uniform(0.065, 0.08))
    base_h = max(2.0, s * 0.055)
    top = base_y - height
    shade_top_w = shade_w * rng.uniform(0.45, 0.65)
    shade = np.array(
        [[x - shade_top_w / 2, top], [x + shade_top_w / 2, top], [x + shade_w / 2, top + shade_h],
         [x - shade_w / 2, top + shade_h]]
    )  # fmt: skip
    return [
        ("pole", _poly(hw, _rect(x - pole_w / 2, top + shade_h * 0.5, x + pole_w / 2, base_y))),
        ("shade", _poly(hw, shade)),
        ("base", _poly(hw, _rect(x - shade_w * 0.38, base_y - base_h, x + shade_w * 0.38, base_y))),
    ]


def draw_table(
    rng: np.random.Generator, hw: tuple[int, int], x: float, base_y: float, s: float
) -> PartMasks:
    """Table seen slightly from above: top surface + front edge, four legs."""
    width, height = s * rng.uniform(0.4, 0.56), s * rng.uniform(0.22, 0.3)
    thick, depth = s * rng.uniform(0.06, 0.08), s * rng.uniform(0.07, 0.11)
    leg = s * rng.uniform(0.06, 0.075)
    x0, top = x - width / 2, base_y - height
    inset = depth * 0.6
    surface = np.array([[x0, top], [x0 + width, top], [x0 + width - inset, top - depth],
                        [x0 + inset, top - depth]])  # fmt: skip
    edge = _rect(x0, top, x0 + width, top + thick)
    legs = [
        _rect(lx, top - depth * 0.5, lx + leg * 0.8, base_y - depth * 0.7)
        for lx in (x0 + inset + leg * 0.2, x0 + width - inset - leg)
    ]
    legs += [_rect(lx, top, lx + leg, base_y) for lx in (x0 + leg * 0.3, x0 + width - leg * 1.3)]
    return [("leg", _poly(hw, *legs)), ("top", _poly(hw, surface, edge))]


def draw_blob(
    rng: np.random.Generator, hw: tuple[int, int], x: float, base_y: float, s: float
) -> np.ndarray:
    """An irregular polygon resting on ``base_y`` (unlabelled clutter). Returns (H, W) uint8."""
    n = int(rng.integers(5, 9))
    radius = s * rng.uniform(0.05, 0.09)
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = radius * rng.uniform(0.6, 1.0, n)
    points = np.stack([x + radii * np.cos(angles), base_y - radius + radii * np.sin(angles)], 1)
    return _poly(hw, points)


Drawer = Callable[[np.random.Generator, tuple[int, int], float, float, float], PartMasks]

SHAPES: dict[str, Drawer] = {
    "tree": draw_tree,
    "house": draw_house,
    "car": draw_car,
    "lamp": draw_lamp,
    "table": draw_table,
}
