"""Render one synthetic scene into a ``SceneRecord``: a pure function of (seed, index, size).

A scene type (outdoor, waterside, indoor) decides the stuff layout (sky on top, ground or floor at
the bottom, water between) and which things stand where; things are painted far to near so nearer
ones occlude farther ones, and every map is updated with the same masks, so they stay exact.
The layout uses its own random stream, independent of the image size; textures and pixel noise
draw from separate streams.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .record import InstanceInfo, SceneRecord
from .shapes import SHAPES, draw_blob
from .spec import SCENE_TYPES, ColorSpec, PartSpec, class_id, class_spec, material_id, part_id
from .textures import TEXTURES, sample_colors

__all__ = ["render_scene", "SCENE_LAYOUTS"]

_CLUTTER = PartSpec("clutter", "noise_blob", "", ColorSpec(0, 180, (0.1, 0.8), (0.2, 0.9)))


@dataclass(frozen=True)
class ThingRule:
    """How many things of a class a scene holds and where they stand: the base row is drawn between
    the ground's top (``lo = 0``) and the image bottom (``hi = 1``)."""

    name: str
    count: tuple[int, int]
    lo: float
    hi: float


@dataclass(frozen=True)
class SceneLayout:
    probability: float
    things: tuple[ThingRule, ...]


SCENE_LAYOUTS: dict[str, SceneLayout] = {
    "outdoor": SceneLayout(
        0.4,
        (ThingRule("house", (0, 2), 0.02, 0.3), ThingRule("tree", (1, 3), 0.1, 1.0),
         ThingRule("car", (0, 2), 0.35, 1.05), ThingRule("lamp", (0, 1), 0.2, 1.0)),
    ),
    "waterside": SceneLayout(
        0.25,
        (ThingRule("house", (0, 1), 0.05, 0.4), ThingRule("tree", (1, 2), 0.15, 1.0),
         ThingRule("car", (0, 1), 0.4, 1.05), ThingRule("lamp", (0, 1), 0.3, 1.0)),
    ),
    "indoor": SceneLayout(
        0.35, (ThingRule("table", (1, 2), 0.3, 1.02), ThingRule("lamp", (1, 2), 0.15, 1.0))
    ),
}  # fmt: skip


class _Canvas:
    """The image and all label maps of a scene being painted."""

    def __init__(self, hw: tuple[int, int], texture_rng: np.random.Generator) -> None:
        self.hw = hw
        self.unit = min(hw) / 128.0
        self.rng = texture_rng
        self.image = np.zeros((*hw, 3), np.float32)
        self.object = np.zeros(hw, np.uint8)
        self.instance = np.zeros(hw, np.int32)
        self.part = np.zeros(hw, np.uint8)
        self.material = np.zeros(hw, np.uint8)

    def paint(self, mask: np.ndarray, spec: PartSpec, ids: tuple[int, int, int]) -> None:
        """Texture the pixels of ``mask`` (H, W) uint8 and write (class, instance, part) ids."""
        x, y, w, h = cv2.boundingRect(mask)
        if w == 0 or h == 0:
            return
        c1, c2 = sample_colors(self.rng, spec.color)
        texture = TEXTURES[spec.texture](self.rng, h, w, self.unit, c1, c2)
        m = mask[y : y + h, x : x + w].astype(bool)
        box = (slice(y, y + h), slice(x, x + w))
        self.image[box][m] = texture[m]
        self.object[box][m] = ids[0]
        self.instance[box][m] = ids[1]
        self.part[box][m] = ids[2]
        self.material[box][m] = material_id(spec.material)


def _boundary(rng: np.random.Generator, width: int, base: float, wave: float, tilt: float):
    """Row of a wavy, possibly tilted boundary at every column. Returns (W,) float."""
    x = np.arange(width, dtype=np.float64)
    y = np.full(width, base) + tilt * (x - width / 2)
    for _ in range(2):
        period = width * rng.uniform(0.4, 1.5)
        y += wave * rng.uniform(0.2, 1.0) * np.sin(2 * np.pi * x / period + rng.uniform(0, 6.3))
    return y


def _stuff_layout(rng: np.random.Generator, scene: str, hw: tuple[int, int]):
    """Stuff regions ({name: mask}) and the ground's top row at every column."""
    h, w = hw
    rows = np.arange(h, dtype=np.float64)[:, None]
    if scene == "indoor":
        line = _boundary(rng, w, h * rng.uniform(0.5, 0.68), h * 0.01, 0.0)
        return {"wall": rows < line, "floor": rows >= line}, line
    horizon = _boundary(rng, w, h * rng.uniform(0.28, 0.48), h * 0.04, rng.uniform(-0.1, 0.1))
    if scene == "outdoor":
        return {"sky": rows < horizon, "grass": rows >= horizon}, horizon
    horizon = np.full(w, horizon.mean())  # open water has a flat horizon
    shore = _boundary(
        rng,
        w,
        horizon[0] + (h - horizon[0]) * rng.uniform(0.3, 0.6),
        h * 0.03,
        rng.uniform(-0.3, 0.3),
    )
    shore = np.clip(shore, horizon + h * 0.08, h * 0.9)
    regions = {
        "sky": rows < horizon,
        "water": (rows >= horizon) & (rows < shore),
        "grass": rows >= shore,
    }
    return regions, shore


def _place_things(rng: np.random.Generator, scene: str, ground: np.ndarray, hw: tuple[int, int]):
    """(base row, name, x, reference length, shape seed) of every thing and clutter blob (name
    "") sorted far to near."""
    h, w = hw
    placed = []
    rules = SCENE_LAYOUTS[scene].things + (ThingRule("", (0, 2), 0.1, 1.0),)
    for rule in rules:
        count = int(rng.integers(rule.count[0], rule.count[1] + 1))
        if not rule.name:  # unlabelled clutter, present in some scenes only
            count *= int(rng.random() < 0.35)
        for _ in range(count):
            x = rng.uniform(0.08, 0.92) * w
            top = float(ground[int(np.clip(x, 0, w - 1))])
            depth = rng.uniform(rule.lo, rule.hi)
            base = top + depth * (h - top)
            s = min(hw) * (0.8 + 0.35 * depth)
            placed.append((base, rule.name, x, s, int(rng.integers(2**31))))
    placed.sort(key=lambda t: t[0])
    return placed


def _finish(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scene illumination, slight blur and sensor noise. Returns (H, W, 3) uint8."""
    gain = rng.uniform(0.8, 1.15) * rng.uniform(0.92, 1.08, 3).astype(np.float32)
    image = cv2.GaussianBlur(image * gain, (3, 3), 0.6)
    image += rng.normal(0.0, rng.uniform(2.0, 6.0), image.shape).astype(np.float32)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def render_scene(seed: int, index: int, size: int | tuple[int, int] = 128) -> SceneRecord:
    """Render scene ``index`` of the set generated with ``seed`` at ``size`` (side or (H, W)).

    The same (seed, index, size) always gives the same record, bit for bit.
    """
    hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    layout_rng = np.random.default_rng([seed, index, 0])
    canvas = _Canvas(hw, np.random.default_rng([seed, index, 1]))
    names = list(SCENE_LAYOUTS)
    probs = np.array([SCENE_LAYOUTS[n].probability for n in names])
    scene = names[int(layout_rng.choice(len(names), p=probs / probs.sum()))]
    regions, ground = _stuff_layout(layout_rng, scene, hw)
    for name, region in regions.items():
        canvas.paint(region.astype(np.uint8), class_spec(name).parts[0], (class_id(name), 0, 0))
    next_instance = 1
    for base, name, x, s, shape_seed in _place_things(layout_rng, scene, ground, hw):
        shape_rng = np.random.default_rng(shape_seed)
        if not name:
            canvas.paint(draw_blob(shape_rng, hw, x, base, s), _CLUTTER, (0, 0, 0))
            continue
        parts = {p.name: p for p in class_spec(name).parts}
        for part_name, mask in SHAPES[name](shape_rng, hw, x, base, s):
            ids = (class_id(name), next_instance, part_id(name, part_name))
            canvas.paint(mask, parts[part_name], ids)
        next_instance += 1
    image = _finish(canvas.image, np.random.default_rng([seed, index, 2]))
    return SceneRecord(
        image=image,
        object=canvas.object,
        instance=canvas.instance,
        part=canvas.part,
        material=canvas.material,
        scene=SCENE_TYPES.index(scene),
        instances=_visible_instances(canvas),
    )


def _visible_instances(canvas: _Canvas) -> tuple[InstanceInfo, ...]:
    ids, first = np.unique(canvas.instance, return_index=True)
    classes = canvas.object.ravel()[first]
    return tuple(InstanceInfo(int(i), int(c)) for i, c in zip(ids, classes) if i > 0)
