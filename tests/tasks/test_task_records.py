"""Task records: one per family, registered under its evaluator_type; the model config values the
metadata decides are checked (or filled) once at set-up, never by mappers or models."""

from __future__ import annotations

import dataclasses
import json

import pytest

from uper_parsing.config import get_cfg
from uper_parsing.data import Metadata, MetadataCatalog
from uper_parsing.data.mappers import MAPPER_REGISTRY, build_mapper
from uper_parsing.evaluation import EVALUATOR_REGISTRY
from uper_parsing.modeling.meta_arch import META_ARCH_REGISTRY
from uper_parsing.tasks import (
    PANOPTIC,
    SEM_SEG,
    TASK_REGISTRY,
    ModelArg,
    TaskFamily,
    configure_model,
    family_of_outputs,
    find_family,
)

OBJECT_PARTS = [[], [0, 1], [2, 3, 4]]


def test_every_family_names_registered_pieces():
    assert set(TASK_REGISTRY) == {"sem_seg", "coco_panoptic_seg", "multitask"}
    for name, family in TASK_REGISTRY.items():
        assert family.name == name
        assert family.mapper in MAPPER_REGISTRY and family.evaluator in EVALUATOR_REGISTRY
        assert all(arch in META_ARCH_REGISTRY for arch in family.meta_architectures)
        assert callable(family.draw) and callable(family.write_demo)
    with pytest.raises(ValueError, match="already registered"):
        TASK_REGISTRY.register(SEM_SEG)
    with pytest.raises(KeyError, match="No task family 'depth'.*registered"):
        TASK_REGISTRY["depth"]


def test_a_fourth_family_is_one_record_and_its_registration():
    def depth_args(metadata, where, cfg):
        bins = metadata.get("depth_bins")
        return [ModelArg("MODEL.SEM_SEG_HEAD.NUM_CLASSES", bins, f"{where} has {bins} bins")]

    depth = dataclasses.replace(
        SEM_SEG,
        name="depth",
        meta_architectures=(),
        metadata_keys=("depth_bins",),
        required_metadata=("depth_bins",),
        model_args=depth_args,
    )
    TASK_REGISTRY.register(depth)
    try:
        metadata = Metadata("my_depth_set").set(depth_bins=7, evaluator_type="depth")
        cfg = get_cfg()
        assert find_family(cfg, metadata) is depth
        with pytest.raises(ValueError, match="NUM_CLASSES is 150 but dataset 'my_depth_set'"):
            configure_model(cfg, metadata)
        assert depth.stored_metadata(metadata) == {"depth_bins": 7, "evaluator_type": "depth"}
    finally:
        TASK_REGISTRY.remove("depth")
    assert "depth" not in TASK_REGISTRY


@pytest.fixture
def registered(fresh_name):
    """Factory: ``registered(**metadata)`` -> name of a metadata registered for this test."""

    def register(**values):
        MetadataCatalog.get(fresh_name).set(**values)
        return fresh_name

    yield register
    if fresh_name in MetadataCatalog:
        MetadataCatalog.remove(fresh_name)


@pytest.fixture
def fresh_name(request):
    name = f"_test_tasks_{request.node.name}".replace("[", "_").replace("]", "_")
    yield name
    if name in MetadataCatalog:
        MetadataCatalog.remove(name)


def test_semantic_class_count_is_checked_at_set_up_not_by_the_mapper(registered):
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = (registered(stuff_classes=list("abc"), evaluator_type="sem_seg"),)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 5
    cfg.freeze()
    build_mapper(cfg, True)  # data code reads no model config
    with pytest.raises(ValueError) as err:
        configure_model(cfg)
    assert str(err.value) == (
        f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is 5 but dataset '{cfg.DATASETS.TRAIN[0]}' has 3 "
        "classes (metadata stuff_classes); set MODEL.SEM_SEG_HEAD.NUM_CLASSES 3"
    )
    cfg.defrost()
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 3
    cfg.freeze()
    assert configure_model(cfg) is SEM_SEG
    assert configure_model(cfg, check=False) is SEM_SEG  # prediction: no comparison


def test_a_mapper_of_another_family_is_an_error_naming_the_right_one(registered):
    cfg = get_cfg()
    name = registered(
        thing_classes=["car"], stuff_classes=["sky"], evaluator_type="coco_panoptic_seg"
    )
    cfg.DATASETS.TRAIN = (name,)
    cfg.MODEL.META_ARCHITECTURE = "PanopticFPN"
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES, cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2, 1
    with pytest.raises(ValueError, match="is 'sem_seg'.*set INPUT.DATASET_MAPPER_NAME panoptic"):
        configure_model(cfg)
    cfg.INPUT.DATASET_MAPPER_NAME = "panoptic"
    assert configure_model(cfg) is PANOPTIC


def _multitask_cfg(train: str):
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = "UnifiedPerceptualParser"
    cfg.INPUT.DATASET_MAPPER_NAME = "multitask"
    cfg.DATASETS.TRAIN = (train,)
    return cfg


def _multitask_metadata(**changes):
    values = dict(
        object_classes=["a", "b", "c"],
        part_classes=["b/-", "b/x", "c/-", "c/x", "c/y"],
        object_parts=OBJECT_PARTS,
        material_classes=["m0", "m1"],
        scene_classes=["s0", "s1", "s2", "s3"],
        texture_classes=["t0"],
        ignore_label=65535,
        evaluator_type="multitask",
    )
    return {**values, **changes}


def test_parser_class_counts_are_filled_from_the_metadata_once(registered):
    cfg = _multitask_cfg(registered(**_multitask_metadata()))
    cfg.freeze()
    configure_model(cfg)
    assert cfg.is_frozen()
    multitask = cfg.MODEL.MULTITASK
    counts = (multitask.NUM_OBJECTS, multitask.NUM_MATERIALS, multitask.NUM_SCENES)
    assert counts == (3, 2, 4) and multitask.NUM_TEXTURES == 1
    assert multitask.OBJECT_PARTS == OBJECT_PARTS and multitask.IGNORE_VALUE == 65535
    configure_model(cfg)  # again: the same values, nothing to do
    cfg.defrost()
    cfg.MODEL.MULTITASK.NUM_SCENES = 5
    with pytest.raises(ValueError, match=r"NUM_SCENES is 5 but .* has 4 scene_classes; set "):
        configure_model(cfg)


def test_a_parser_without_class_lists_says_where_they_can_come_from():
    cfg = _multitask_cfg("_test_tasks_never_registered")
    with pytest.raises(ValueError, match="never_registered.*no object_classes.*MODEL.WEIGHTS"):
        configure_model(cfg)
    cfg.MODEL.MULTITASK.TASKS = ["object"]
    cfg.MODEL.MULTITASK.NUM_OBJECTS, cfg.MODEL.MULTITASK.IGNORE_VALUE = 4, 255
    assert configure_model(cfg) is not None  # set by hand: nothing to derive
    MetadataCatalog.remove("_test_tasks_never_registered")


def test_stored_metadata_survives_a_json_round_trip():
    metadata = Metadata("coco-like").set(
        thing_classes=("car",),
        thing_colors=[(1, 2, 3)],
        stuff_classes=["sky"],
        stuff_colors=[[4, 5, 6]],
        thing_dataset_id_to_contiguous_id={3: 0},
        stuff_dataset_id_to_contiguous_id={100: 0},
        ignore_label=255,
        image_root="/not/stored",
    )
    stored = PANOPTIC.stored_metadata(metadata)
    assert "image_root" not in stored and stored["thing_colors"] == [[1, 2, 3]]
    restored = PANOPTIC.restore_metadata(json.loads(json.dumps(stored)), "restored")
    assert restored.thing_dataset_id_to_contiguous_id == {3: 0}
    assert restored.evaluator_type == "coco_panoptic_seg" and restored.thing_classes == ["car"]


def test_family_of_outputs_prefers_the_family_owning_most_keys():
    assert family_of_outputs({"sem_seg": 0}) is SEM_SEG
    assert family_of_outputs({"panoptic_seg": 0, "sem_seg": 0, "instances": 0}) is PANOPTIC
    assert family_of_outputs({"object": 0, "scene": 0}) is TASK_REGISTRY["multitask"]
    assert family_of_outputs({"depth": 0}) is None


def test_records_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SEM_SEG.mapper = "panoptic"  # type: ignore[misc]
    assert isinstance(SEM_SEG, TaskFamily)
