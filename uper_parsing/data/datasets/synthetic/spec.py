"""What the synthetic scenes contain: classes (stuff and things with parts), materials, scenes.

Class ids used in rendered records: 0 = unlabelled, ``i + 1`` = ``SYNTHETIC_CLASSES[i]``. Part ids:
0 = no part, ``j + 1`` = ``SYNTHETIC_PARTS[j]``. Material ids: 0 = none, ``k + 1`` =
``SYNTHETIC_MATERIALS[k]``. Colours are drawn per instance from wide, overlapping hue ranges
(``ColorSpec``), so a class is recognised by shape, texture and place in the scene, not by colour.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ColorSpec",
    "PartSpec",
    "ClassSpec",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_CLASS_NAMES",
    "SYNTHETIC_CLASS_COLORS",
    "SYNTHETIC_PARTS",
    "SYNTHETIC_MATERIALS",
    "SCENE_TYPES",
    "class_id",
    "part_id",
    "material_id",
]


@dataclass(frozen=True)
class ColorSpec:
    """HSV distribution of a base colour: hue in degrees +- spread, saturation and value ranges.

    With probability ``alt_prob`` the hue is drawn around ``alt_hue`` instead (autumn leaves,
    sunset sky, ...).
    """

    hue: float
    spread: float
    sat: tuple[float, float]
    val: tuple[float, float]
    alt_hue: float = 0.0
    alt_prob: float = 0.0


@dataclass(frozen=True)
class PartSpec:
    """One part of a thing (or the single region of a stuff class): texture, material, colours."""

    name: str
    texture: str
    material: str
    color: ColorSpec


@dataclass(frozen=True)
class ClassSpec:
    """A class: ``kind`` is "stuff" (one region, ``parts[0]`` describes it) or "thing"."""

    name: str
    kind: str
    parts: tuple[PartSpec, ...]
    vis_color: tuple[int, int, int]


_ANY = 180.0  # a hue spread covering the whole circle

SYNTHETIC_CLASSES: tuple[ClassSpec, ...] = (
    ClassSpec(
        "sky",
        "stuff",
        (PartSpec("sky", "sky", "", ColorSpec(215, 45, (0.25, 0.7), (0.55, 0.95), 25, 0.25)),),
        (70, 130, 180),
    ),
    ClassSpec(
        "wall",
        "stuff",
        (PartSpec("wall", "bricks", "brick", ColorSpec(15, _ANY, (0.15, 0.6), (0.4, 0.85))),),
        (102, 102, 156),
    ),
    ClassSpec(
        "floor",
        "stuff",
        (PartSpec("floor", "tiles", "tile", ColorSpec(30, _ANY, (0.1, 0.5), (0.45, 0.9))),),
        (128, 64, 128),
    ),
    ClassSpec(
        "grass",
        "stuff",
        (
            PartSpec(
                "grass", "grass", "foliage", ColorSpec(100, 35, (0.35, 0.8), (0.3, 0.7), 50, 0.3)
            ),
        ),
        (107, 142, 35),
    ),
    ClassSpec(
        "water",
        "stuff",
        (
            PartSpec(
                "water", "waves", "water", ColorSpec(195, 45, (0.35, 0.8), (0.3, 0.75), 160, 0.2)
            ),
        ),
        (0, 80, 200),
    ),
    ClassSpec(
        "tree",
        "thing",
        (
            PartSpec("trunk", "bark", "wood", ColorSpec(30, 25, (0.35, 0.7), (0.2, 0.45))),
            PartSpec(
                "crown", "leaves", "foliage", ColorSpec(110, 45, (0.4, 0.8), (0.3, 0.7), 30, 0.3)
            ),
        ),
        (0, 160, 60),
    ),
    ClassSpec(
        "house",
        "thing",
        (
            PartSpec("body", "siding", "painted", ColorSpec(40, _ANY, (0.15, 0.6), (0.5, 0.9))),
            PartSpec("roof", "shingles", "tile", ColorSpec(10, 50, (0.3, 0.7), (0.25, 0.6))),
            PartSpec("window", "glass", "glass", ColorSpec(200, 50, (0.1, 0.45), (0.55, 0.95))),
            PartSpec("door", "planks", "wood", ColorSpec(30, 40, (0.3, 0.7), (0.2, 0.5))),
        ),
        (220, 120, 60),
    ),
    ClassSpec(
        "car",
        "thing",
        (
            PartSpec("body", "metallic", "metal", ColorSpec(0, _ANY, (0.45, 0.9), (0.35, 0.9))),
            PartSpec("window", "dark_glass", "glass", ColorSpec(210, 40, (0.1, 0.35), (0.15, 0.4))),
            PartSpec("wheel", "wheel", "rubber", ColorSpec(0, _ANY, (0.0, 0.15), (0.08, 0.22))),
        ),
        (0, 0, 142),
    ),
    ClassSpec(
        "lamp",
        "thing",
        (
            PartSpec("pole", "cylinder", "metal", ColorSpec(0, _ANY, (0.0, 0.3), (0.15, 0.45))),
            PartSpec("shade", "fabric", "fabric", ColorSpec(45, _ANY, (0.3, 0.8), (0.7, 1.0))),
            PartSpec("base", "cylinder", "metal", ColorSpec(0, _ANY, (0.0, 0.3), (0.15, 0.5))),
        ),
        (250, 170, 30),
    ),
    ClassSpec(
        "table",
        "thing",
        (
            PartSpec("top", "wood_grain", "wood", ColorSpec(25, 25, (0.45, 0.8), (0.25, 0.6))),
            PartSpec("leg", "wood_grain_v", "wood", ColorSpec(25, 25, (0.45, 0.8), (0.2, 0.55))),
        ),
        (190, 100, 190),
    ),
)

SYNTHETIC_CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in SYNTHETIC_CLASSES)
SYNTHETIC_CLASS_COLORS: tuple[tuple[int, int, int], ...] = tuple(
    c.vis_color for c in SYNTHETIC_CLASSES
)
SYNTHETIC_PARTS: tuple[str, ...] = tuple(
    f"{c.name}/{p.name}" for c in SYNTHETIC_CLASSES if c.kind == "thing" for p in c.parts
)
SYNTHETIC_MATERIALS: tuple[str, ...] = tuple(
    sorted({p.material for c in SYNTHETIC_CLASSES for p in c.parts if p.material})
)
SCENE_TYPES: tuple[str, ...] = ("outdoor", "waterside", "indoor")


def class_id(name: str) -> int:
    """Id of class ``name`` in rendered object maps (1-based; 0 = unlabelled)."""
    return SYNTHETIC_CLASS_NAMES.index(name) + 1


def part_id(class_name: str, part_name: str) -> int:
    """Id of a thing part in rendered part maps (1-based; 0 = no part)."""
    return SYNTHETIC_PARTS.index(f"{class_name}/{part_name}") + 1


def material_id(name: str) -> int:
    """Id of a material in rendered material maps (1-based; 0 = none)."""
    return SYNTHETIC_MATERIALS.index(name) + 1 if name else 0


def class_spec(name: str) -> ClassSpec:
    return SYNTHETIC_CLASSES[class_id(name) - 1]
