"""Deterministic synthetic scenes: the embedded default dataset of the quickstart and the tests.

``render_scene(seed, index, size) -> SceneRecord`` renders a scene (image, object / instance /
part / material maps, scene type); ``SCENE_WRITERS`` turn records into file formats;
``prepare_synthetic_scenes`` writes a whole set once; ``register_synthetic_scenes`` /
``register_synthetic_multitask`` / ``register_synthetic_panoptic`` register it.
"""

from .broden_writer import TEXTURE_CLASSES, BrodenSceneWriter
from .coco_panoptic_writer import CocoPanopticSceneWriter, synthetic_panoptic_categories
from .generate import (
    GENERATOR_VERSION,
    SyntheticParams,
    generate_synthetic_scenes,
    is_up_to_date,
    prepare_synthetic_scenes,
)
from .record import InstanceInfo, SceneRecord
from .register import (
    DEFAULT_SYNTHETIC_PARAMS,
    register_synthetic_multitask,
    register_synthetic_panoptic,
    register_synthetic_scenes,
    synthetic_folder,
)
from .render import render_scene
from .spec import (
    SCENE_TYPES,
    SYNTHETIC_CLASS_COLORS,
    SYNTHETIC_CLASS_NAMES,
    SYNTHETIC_CLASSES,
    SYNTHETIC_MATERIALS,
    SYNTHETIC_PARTS,
)
from .writers import SCENE_WRITERS, AdeSceneWriter, SceneWriter

__all__ = [
    "DEFAULT_SYNTHETIC_PARAMS",
    "GENERATOR_VERSION",
    "SCENE_TYPES",
    "SCENE_WRITERS",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_CLASS_COLORS",
    "SYNTHETIC_CLASS_NAMES",
    "SYNTHETIC_MATERIALS",
    "SYNTHETIC_PARTS",
    "TEXTURE_CLASSES",
    "AdeSceneWriter",
    "BrodenSceneWriter",
    "CocoPanopticSceneWriter",
    "InstanceInfo",
    "SceneRecord",
    "SceneWriter",
    "SyntheticParams",
    "generate_synthetic_scenes",
    "is_up_to_date",
    "prepare_synthetic_scenes",
    "register_synthetic_multitask",
    "register_synthetic_panoptic",
    "register_synthetic_scenes",
    "render_scene",
    "synthetic_folder",
    "synthetic_panoptic_categories",
]
