"""Broden-format reading: label decoding, number -> train id mapping, registration, errors."""

import shutil

import numpy as np
import pytest
from _multitask_helpers import tiny_numbers, write_broden, write_numbers

from uper_parsing.data import (
    DatasetCatalog,
    MetadataCatalog,
    load_broden,
    read_multitask_label,
    register_multitask,
)
from uper_parsing.data.datasets.broden import broden_metadata
from uper_parsing.data.multitask_utils import decode_label_numbers, multitask_metadata


@pytest.fixture
def broden(tmp_path):
    return write_broden(tmp_path / "broden")


@pytest.fixture
def meta(broden):
    return broden_metadata(broden, "train")


def _read(meta, root, task, **kw):
    return read_multitask_label(str(root / "images" / f"a_{task}.png"), _Meta(meta), task, **kw)


class _Meta(dict):
    """Attribute access over a metadata dict (what ``Metadata`` offers)."""

    __getattr__ = dict.__getitem__


def test_decodes_r_plus_256_g(broden):
    numbers = decode_label_numbers(broden / "images" / "a_part.png")
    assert np.array_equal(numbers, tiny_numbers()["part"]) and numbers.max() == 513


def test_metadata_from_csv(meta):
    assert meta["object_classes"] == ["person", "table"]
    # Every object with parts owns a background part "-" first (CSAIL's local index 0).
    assert meta["part_classes"] == ["person/-", "person/head", "person/leg", "table/-", "table/leg"]
    assert meta["object_parts"] == [[0, 1, 2], [3, 4]]
    assert meta["material_classes"] == ["wood", "skin"]  # code order
    assert meta["scene_classes"] == ["kitchen", "street"] and meta["texture_classes"] == ["striped"]
    assert meta["ignore_label"] == 255 and meta["evaluator_type"] == "multitask"
    assert len(meta["object_colors"]) == 2 and len(meta["material_colors"]) == 2
    assert meta["sources"] == [
        {"name": "pascal", "tasks": ["object", "part", "material", "scene"], "size": 1},
        {"name": "dtd", "tasks": ["texture"], "size": 1},
    ]
    assert meta["ignored_numbers"]["object"] == [7]


def test_reader_maps_numbers_to_train_ids(meta, broden):
    obj = _read(meta, broden, "object", expected_hw=(6, 8))
    expected = np.full((6, 8), 255)
    expected[:, :4], expected[:, 4:7] = 0, 1
    assert obj.dtype == np.int64 and np.array_equal(obj, expected)
    mat = _read(meta, broden, "material")
    assert np.array_equal(mat, np.where(expected == 0, 1, np.where(expected == 1, 0, 255)))
    part = _read(meta, broden, "part", objects=obj)
    want = np.full((6, 8), 255)
    want[:, :4], want[:, 4:7] = 0, 3  # object pixels without a part: the object's "-"
    want[:2, :4], want[4:, :4], want[4:, 4:7] = 1, 2, 4  # "leg" resolved per object
    assert np.array_equal(part, want)


def test_reader_ignores_untrained_and_orphan_parts(meta, broden):
    numbers = tiny_numbers()["object"]
    numbers[0, 0] = 7  # "car": an object label, not trained -> ignore
    write_numbers(broden / "images" / "a_object.png", numbers)
    obj = _read(meta, broden, "object")
    assert obj[0, 0] == 255 and obj[1, 0] == 0
    obj[5, 4] = 255  # a leg pixel without its object -> ignore
    part = _read(meta, broden, "part", objects=obj)
    assert part[5, 4] == 255
    obj[0, 0] = 1  # a head inside a table: a part the table does not own -> the table's "-"
    assert _read(meta, broden, "part", objects=obj)[0, 0] == 3


def test_reader_errors_name_file_and_value(meta, broden):
    numbers = tiny_numbers()["object"]
    numbers[2, 2] = 513  # a part number in an object map
    path = broden / "images" / "a_object.png"
    write_numbers(path, numbers)
    with pytest.raises(ValueError, match=rf"{path}.*\[513\].*'object'"):
        _read(meta, broden, "object")
    with pytest.raises(ValueError, match=r"a_material.png has size \(H, W\) = \(6, 8\)"):
        _read(meta, broden, "material", expected_hw=(6, 9))
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_multitask_label(str(broden / "nope.png"), _Meta(meta), "object")
    with pytest.raises(ValueError, match="needs the object map"):
        _read(meta, broden, "part")


def test_multiple_layers_first_labelled_wins(meta, broden):
    images = broden / "images"
    top = np.zeros((6, 8), np.int64)
    top[0, :] = 300
    write_numbers(images / "top.png", top)
    obj = read_multitask_label([str(images / "top.png"), str(images / "a_object.png")],
                               _Meta(meta), "object")  # fmt: skip
    assert (obj[0] == 1).all() and obj[1, 0] == 0


def test_register_and_load(broden, fresh_name):
    register_multitask(fresh_name, root=broden, split="train", metadata={"ignore_label": 255})
    md = MetadataCatalog.get(fresh_name)
    assert md.object_parts == [[0, 1, 2], [3, 4]] and md.root == str(broden)
    dicts = DatasetCatalog.get(fresh_name)
    assert [d["source"] for d in dicts] == ["pascal", "dtd"]
    a, t = dicts
    assert a["tasks"] == ["object", "part", "material", "scene"] and a["scene"] == 1
    assert a["part_file_name"] == str(broden / "images" / "a_part.png")
    assert (a["height"], a["width"], a["image_id"]) == (6, 8, "a")
    assert t["tasks"] == ["texture"] and t["texture"] == 0 and "object_file_name" not in t
    val = load_broden(broden, "val")
    assert val[0]["source"] == "broden" and val[0]["tasks"] == ["object", "scene"]


def test_register_checks_hierarchy_and_labels(tmp_path, fresh_name):
    root = write_broden(tmp_path / "b", hierarchy=[("person", "tail")])
    with pytest.raises(ValueError, match=r"part_hierarchy.csv: part 'tail'"):
        register_multitask(fresh_name, root=root, split="train")
    shutil.rmtree(root)
    root = write_broden(tmp_path / "b", hierarchy=[("horse", "leg")])
    with pytest.raises(ValueError, match=r"part_hierarchy.csv: object 'horse'"):
        register_multitask(fresh_name, root=root, split="train")
    (root / "c_scene.csv").write_text("code,number,name\n1,99,attic\n")
    with pytest.raises(ValueError, match=r"c_scene.csv row 2: label number 99"):
        register_multitask(fresh_name, root=root, split="train")
    with pytest.raises(ValueError, match="no rows of split 'test'"):
        broden_metadata(write_broden(tmp_path / "c"), "test")
    assert fresh_name not in DatasetCatalog


def test_builtin_broden_is_lazy(tmp_path, monkeypatch):
    monkeypatch.setenv("UPER_PARSING_DATASETS", str(tmp_path))
    assert "broden_multitask_train" in DatasetCatalog and "broden_multitask_val" in DatasetCatalog
    md = MetadataCatalog.get("broden_multitask_val")
    assert md.evaluator_type == "multitask" and md.root == str(tmp_path / "broden")
    with pytest.raises(FileNotFoundError, match="broden/label.csv"):
        DatasetCatalog.get("broden_multitask_val")
    write_broden(tmp_path / "broden")
    assert md.object_classes == ["person", "table"]
    assert md.ignore_label == 255  # from the class counts (65535 above 255 classes in a task)
    assert len(DatasetCatalog.get("broden_multitask_val")) == 1


def test_ignore_label_grows_past_255_classes():
    objects = [(i + 1, f"o{i}") for i in range(300)]
    meta = multitask_metadata(classes={"object": objects}, part_hierarchy=[], sources=[])
    assert meta["ignore_label"] == 65535
    small = multitask_metadata(classes={"object": objects[:255]}, part_hierarchy=[], sources=[])
    assert small["ignore_label"] == 255
    with pytest.raises(ValueError, match="ignore_label 255 would be a class id"):
        multitask_metadata(
            classes={"object": objects}, part_hierarchy=[], sources=[], ignore_label=255
        )
