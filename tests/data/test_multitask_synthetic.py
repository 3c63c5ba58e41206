"""The synthetic scenes in the Broden format: deterministic, consistent with the metadata."""

from pathlib import Path

import numpy as np
import pytest
from _multitask_helpers import MT_PARAMS, prepare_tiny_multitask

from uper_parsing.data import DatasetCatalog, MetadataCatalog, SyntheticParams, read_multitask_label
from uper_parsing.data.datasets import DATASETS_ENV
from uper_parsing.data.datasets.broden import broden_metadata
from uper_parsing.data.datasets.synthetic import (
    SCENE_TYPES,
    SYNTHETIC_CLASS_NAMES,
    SYNTHETIC_MATERIALS,
    SYNTHETIC_PARTS,
    TEXTURE_CLASSES,
    generate_synthetic_scenes,
    render_scene,
)
from uper_parsing.data.datasets.synthetic.spec import SYNTHETIC_CLASSES


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mt_datasets")
    prepare_tiny_multitask(root)
    return root


@pytest.fixture
def names(tiny_root, monkeypatch):
    monkeypatch.setenv(DATASETS_ENV, str(tiny_root))
    return prepare_tiny_multitask(tiny_root)


def test_generation_is_deterministic_and_keeps_ade_bytes(tmp_path):
    params = SyntheticParams(
        seed=1, image_size=48, num_train=5, num_val=2, formats=("ade", "broden")
    )
    generate_synthetic_scenes(tmp_path / "a", params)
    generate_synthetic_scenes(tmp_path / "b", params)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a == b
    ade_only = SyntheticParams(seed=1, image_size=48, num_train=5, num_val=2)
    generate_synthetic_scenes(tmp_path / "c", ade_only)
    c = _files(tmp_path / "c")
    assert {k: v for k, v in a.items() if not k.startswith("broden/") and k != "meta.json"} == {
        k: v for k, v in c.items() if k != "meta.json"
    }
    broden = [k for k in a if k.startswith("broden/images/")]
    # train: 4 scenes (3 files: jpg, object, part), 1 material scene (2), 2 textures; val: 2 x 4, 1
    assert len(broden) == 4 * 3 + 1 * 2 + 2 + 2 * 4 + 1


def test_metadata(names):
    train, val = names
    md = MetadataCatalog.get(train)
    assert md.object_classes == list(SYNTHETIC_CLASS_NAMES) and len(md.object_classes) == 10
    things = [i for i, c in enumerate(SYNTHETIC_CLASSES) if c.kind == "thing"]
    # Each thing owns its background part "-" first, then its parts in SYNTHETIC_PARTS order.
    expected = []
    for i in things:
        name = SYNTHETIC_CLASS_NAMES[i]
        expected += [f"{name}/-", *(p for p in SYNTHETIC_PARTS if p.startswith(f"{name}/"))]
    assert md.part_classes == expected
    assert [i for i, p in enumerate(md.object_parts) if p] == things
    assert sorted(sum(md.object_parts, [])) == list(range(len(SYNTHETIC_PARTS) + len(things)))
    assert md.material_classes == list(SYNTHETIC_MATERIALS)
    assert md.scene_classes == list(SCENE_TYPES) and md.texture_classes == list(TEXTURE_CLASSES)
    assert md.evaluator_type == "multitask" and md.ignore_label == 255
    assert md.sources == [
        {"name": "scenes", "tasks": ["object", "part", "scene"], "size": 8},
        {"name": "materials", "tasks": ["material"], "size": 4},
        {"name": "textures", "tasks": ["texture"], "size": 6},
    ]
    assert MetadataCatalog.get(val).sources == [
        {"name": "scenes", "tasks": ["object", "part", "material", "scene"], "size": 4},
        {"name": "textures", "tasks": ["texture"], "size": 2},
    ]
    for split, name in (("train", train), ("val", val)):  # the written csvs say the same
        from_csv = broden_metadata(md.root, split)
        registered = MetadataCatalog.get(name).as_dict()
        for key, value in from_csv.items():
            assert key == "object_colors" or registered[key] == value, key


def test_labels_equal_the_rendered_record(names):
    train, val = names
    md = MetadataCatalog.get(val)
    d = DatasetCatalog.get(val)[1]
    record = render_scene(MT_PARAMS.seed, (1 << 24) + 1, MT_PARAMS.image_size)
    obj = read_multitask_label(d["object_file_name"], md, "object", (64, 64))
    assert np.array_equal(obj, np.where(record.object == 0, 255, record.object.astype(int) - 1))
    part = read_multitask_label(d["part_file_name"], md, "part", (64, 64), objects=obj)
    new_id = np.array([md.part_classes.index(p) for p in SYNTHETIC_PARTS])
    background = np.array([ids[0] if ids else 255 for ids in md.object_parts] + [255])
    no_part = background[np.where(obj == 255, len(md.object_parts), obj)]
    assert np.array_equal(
        part,
        np.where(record.part == 0, no_part, new_id[np.maximum(record.part.astype(int) - 1, 0)]),
    )
    assert (part == no_part).any() and (part != no_part).any()
    mat = read_multitask_label(d["material_file_name"], md, "material", (64, 64))
    assert np.array_equal(mat, np.where(record.material == 0, 255, record.material.astype(int) - 1))
    assert d["scene"] == record.scene
    dicts = DatasetCatalog.get(train)
    assert [d["source"] for d in dicts[:3]] == ["scenes", "scenes", "materials"]
    assert {d["source"]: d["tasks"] for d in dicts}["materials"] == ["material"]
    textures = [d for d in dicts if d["source"] == "textures"]
    assert all((t["height"], t["width"]) == (64, 64) and 0 <= t["texture"] < 18 for t in textures)


def test_builtin_names_registered():
    for split in ("train", "val"):
        md = MetadataCatalog.get(f"synthetic_scenes_multitask_{split}")
        assert md.evaluator_type == "multitask" and len(md.part_classes) == 14 + 5
    assert [s["size"] for s in MetadataCatalog.get("synthetic_scenes_multitask_train").sources] == [
        400,
        200,
        300,
    ]
