"""``SceneRecord``: everything known about one rendered scene, independent of any file format."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["InstanceInfo", "SceneRecord"]


@dataclass(frozen=True)
class InstanceInfo:
    """One visible thing instance: its id in ``SceneRecord.instance`` and its class id."""

    id: int
    class_id: int


@dataclass(frozen=True)
class SceneRecord:
    """A rendered scene. All maps are (H, W) and pixel-exact (occlusion already applied).

    Attributes:
        image: (H, W, 3) uint8 RGB.
        object: (H, W) uint8 class ids: 0 = unlabelled, ``i + 1`` = ``SYNTHETIC_CLASSES[i]``.
        instance: (H, W) int32 thing instance ids, 0 on stuff and unlabelled pixels.
        part: (H, W) uint8 part ids: 0 = none, ``j + 1`` = ``SYNTHETIC_PARTS[j]``.
        material: (H, W) uint8 material ids: 0 = none, ``k + 1`` = ``SYNTHETIC_MATERIALS[k]``.
        scene: index into ``SCENE_TYPES``.
        instances: the visible thing instances, by increasing id.
    """

    image: np.ndarray
    object: np.ndarray
    instance: np.ndarray
    part: np.ndarray
    material: np.ndarray
    scene: int
    instances: tuple[InstanceInfo, ...]

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])
