"""Datasets declared in a YAML / JSON file (DATASETS.REGISTER): one per family trained through
the real loaders, and a clear error for each kind of bad declaration."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from _data_helpers import block_label, write_panoptic_set, write_sem_seg_set
from _multitask_helpers import write_broden

from uper_parsing.config import get_cfg
from uper_parsing.data import DatasetCatalog, MetadataCatalog, build_train_loader, read_sem_seg
from uper_parsing.data.datasets import (
    DeclarationError,
    register_declared,
    register_declared_datasets,
)
from uper_parsing.engine import default_argument_parser, default_setup

QUICKSTART = Path(__file__).resolve().parents[2] / "configs" / "quickstart"


@pytest.fixture
def name(request):
    """A dataset name unique to the test; its splits are removed from the catalogs afterwards."""
    base = re.sub(r"\W", "_", f"decl_{request.node.name}")
    yield base
    for catalog in (DatasetCatalog, MetadataCatalog):
        for registered in [n for n in catalog.list() if n.startswith(f"{base}_")]:
            catalog.remove(registered)


def declare(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data) if path.suffix == ".json" else yaml.safe_dump(data))
    return path


def config(file: str, declaration: Path, train: str, **overrides):
    cfg = get_cfg()
    cfg.merge_from_file(str(QUICKSTART / file))
    opts = ["DATASETS.REGISTER", f"('{declaration}',)", "DATASETS.TRAIN", f"('{train}',)"]
    opts += ["DATASETS.TEST", "()", "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0"]
    for key, value in overrides.items():
        opts += [key.replace("__", "."), str(value)]
    cfg.merge_from_list(opts)
    cfg.freeze()
    return cfg


def sem_seg_declaration(tmp_path: Path, name: str, **fields) -> dict:
    for split, stems in (("train", ["a", "b", "c"]), ("val", ["d"])):
        write_sem_seg_set(tmp_path / "data" / split, stems)
    splits = {
        s: {"image_root": f"data/{s}/images", "label_root": f"data/{s}/labels"}
        for s in ("train", "val")
    }
    declaration = {"family": "sem_seg", "name": name, "stuff_classes": ["a", "b", "c"]}
    return {**declaration, "splits": splits, **fields}


# ----------------------------------------------------------------------------- each family


def test_sem_seg_declaration_trains_through_the_loader(tmp_path, name):
    decl = declare(tmp_path / "my_data.yaml", sem_seg_declaration(tmp_path, name))
    cfg = config(
        "upernet_R18_synthetic.yaml", decl, f"{name}_train", MODEL__SEM_SEG_HEAD__NUM_CLASSES=3
    )

    assert register_declared_datasets(cfg) == [f"{name}_train", f"{name}_val"]
    dicts = DatasetCatalog.get(f"{name}_train")
    assert [d["image_id"] for d in dicts] == ["a", "b", "c"]
    assert dicts[1]["sem_seg_file_name"] == str(tmp_path / "data/train/labels/b.png")
    meta = MetadataCatalog.get(f"{name}_train")
    assert meta.stuff_classes == ["a", "b", "c"] and meta.ignore_label == 255
    np.testing.assert_array_equal(
        read_sem_seg(dicts[1]["sem_seg_file_name"], meta), block_label((24, 32), 8, 3, seed=1)
    )

    batch = next(iter(build_train_loader(cfg)))
    assert len(batch) == 2
    for item in batch:
        assert item["image"].shape == (3, 128, 128) and item["sem_seg"].shape == (128, 128)
        assert set(torch.unique(item["sem_seg"]).tolist()) <= {0, 1, 2, 255}


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_sem_seg_label_id_map_and_colors(tmp_path, name, suffix):
    data = sem_seg_declaration(
        tmp_path,
        name,
        stuff_colors=[[1, 2, 3], [4, 5, 6], [7, 8, 9]],
        label_id_map={0: 2, 1: 255, 2: 0},  # JSON writes the keys as strings
        ignore_label=255,
    )
    register_declared(declare(tmp_path / f"decl{suffix}", data))
    meta = MetadataCatalog.get(f"{name}_train")
    assert meta.stuff_colors == [(1, 2, 3), (4, 5, 6), (7, 8, 9)]
    stored = block_label((24, 32), 8, 3, seed=0)
    label = read_sem_seg(tmp_path / "data/train/labels/a.png", meta)
    np.testing.assert_array_equal(label, np.array([2, 255, 0])[stored])


def test_coco_panoptic_declaration_takes_categories_from_the_json(tmp_path, name):
    write_panoptic_set(tmp_path / "pan", ["a", "b"])
    decl = declare(
        tmp_path / "pan.yaml",
        {
            "family": "coco_panoptic",
            "name": name,
            "splits": {
                "train": {
                    "image_root": "pan/images",
                    "panoptic_root": "pan/panoptic",
                    "panoptic_json": "pan/panoptic.json",
                }
            },
        },
    )
    cfg = config(
        "panoptic_fpn_R18_synthetic.yaml",
        decl,
        f"{name}_train",
        MODEL__ROI_HEADS__NUM_CLASSES=1,
        MODEL__SEM_SEG_HEAD__NUM_CLASSES=2,
    )
    register_declared_datasets(cfg)
    meta = MetadataCatalog.get(f"{name}_train")
    assert meta.thing_classes == ["box"] and meta.stuff_classes == ["floor"]
    assert meta.evaluator_type == "coco_panoptic_seg"
    dicts = DatasetCatalog.get(f"{name}_train")
    assert [d["image_id"] for d in dicts] == [1, 2]
    assert [s["category_id"] for s in dicts[0]["segments_info"]] == [0, 0]

    batch = next(iter(build_train_loader(cfg)))
    assert len(batch) == 2
    for item in batch:
        assert item["instances"]["labels"].tolist() == [0]
        assert set(torch.unique(item["sem_seg"]).tolist()) <= {0, 1, 255}


def test_multitask_declaration_trains_through_the_loader(tmp_path, name):
    write_broden(tmp_path / "broden")
    decl = declare(
        tmp_path / "mt.yaml",
        {
            "family": "multitask",
            "name": name,
            "root": "broden",
            "splits": ["train", "val"],
            "object_colors": [[10, 20, 30], [40, 50, 60]],
        },
    )
    cfg = config("unified_parsing_R18_synthetic.yaml", decl, f"{name}_train")
    assert register_declared_datasets(cfg) == [f"{name}_train", f"{name}_val"]
    meta = MetadataCatalog.get(f"{name}_train")
    assert meta.object_classes == ["person", "table"] and meta.split == "train"
    assert [s["name"] for s in meta.sources] == ["pascal", "dtd"]
    assert len(DatasetCatalog.get(f"{name}_val")) == 1

    batch = next(iter(build_train_loader(cfg)))
    assert len(batch) == 2 and len({item["source"] for item in batch}) == 1


def test_registering_again_is_a_no_op(tmp_path, name):
    decl = declare(tmp_path / "my_data.yaml", sem_seg_declaration(tmp_path, name))
    cfg = config("upernet_R18_synthetic.yaml", decl, f"{name}_train", OUTPUT_DIR=tmp_path / "out")
    args = default_argument_parser().parse_args([])
    default_setup(cfg, args)
    default_setup(cfg, args)  # a second set-up in the same process
    assert register_declared(decl) == [f"{name}_train", f"{name}_val"]
    assert f"{name}_val" in DatasetCatalog


# ----------------------------------------------------------------------------- bad declarations


def _error(path: Path) -> str:
    with pytest.raises(DeclarationError) as info:
        register_declared(path)
    return str(info.value)


def _sem_seg_error(tmp_path: Path, name: str, edit) -> str:
    data = sem_seg_declaration(tmp_path, name)
    edit(data)
    return _error(declare(tmp_path / "bad.yaml", data))


@pytest.mark.parametrize(
    "edit, expected",
    [
        (
            lambda d: d.pop("stuff_classes"),
            "bad.yaml: stuff_classes: missing (expected a non-empty list of names)",
        ),
        (
            lambda d: d["splits"]["train"].pop("label_root"),
            "bad.yaml: splits.train.label_root: missing (expected an existing folder",
        ),
        (
            lambda d: d.pop("family"),
            "bad.yaml: family: missing (expected one of sem_seg, coco_panoptic, multitask)",
        ),
        (
            lambda d: d.update(family="semseg"),
            "bad.yaml: family: unknown family 'semseg' "
            "(expected one of sem_seg, coco_panoptic, multitask)",
        ),
        (
            lambda d: d.update(stuff_clases=d.pop("stuff_classes")),
            "bad.yaml: stuff_clases: unknown key; did you mean 'stuff_classes'?",
        ),
        (
            lambda d: d["splits"]["val"].update(imge_root="x"),
            "bad.yaml: splits.val.imge_root: unknown key; did you mean 'image_root'?",
        ),
        (
            lambda d: d.update(ignore_label="255"),
            "bad.yaml: ignore_label: got '255' (expected an integer)",
        ),
        (
            lambda d: d.update(stuff_classes="a b c"),
            "bad.yaml: stuff_classes: got 'a b c' (expected a non-empty list of names)",
        ),
        (
            lambda d: d.update(stuff_colors=[[1, 2]]),
            "bad.yaml: stuff_colors: got [[1, 2]] (expected a list of [R, G, B] triples",
        ),
        (
            lambda d: d.update(label_id_map={"x": 1}),
            "bad.yaml: label_id_map: key 'x' is not an integer (expected a mapping",
        ),
        (
            lambda d: d["splits"]["train"].update(image_root="nope"),
            "/nope does not exist (expected an existing folder, relative to the declaration",
        ),
        (
            lambda d: d.update(splits=["train"]),
            "bad.yaml: splits: got ['train'] (expected a mapping {split: {field: value}})",
        ),
        (
            lambda d: d.update(name="my data"),
            "bad.yaml: name: got 'my data' (expected a name of letters, digits",
        ),
        (  # a check of register_sem_seg, kept, with the file named
            lambda d: d.update(ignore_label=1),
            "bad.yaml: splits.train: metadata of dataset 'decl_",
        ),
    ],
    ids=[
        "missing",
        "missing_in_split",
        "missing_family",
        "unknown_family",
        "typo",
        "typo_in_split",
        "int_as_string",
        "string_as_list",
        "bad_color",
        "bad_id_map",
        "no_such_folder",
        "splits_not_a_mapping",
        "bad_name",
        "register_check",
    ],
)
def test_bad_sem_seg_declaration(tmp_path, name, edit, expected):
    message = _sem_seg_error(tmp_path, name, edit)
    assert expected in message, message
    assert f"{name}_train" not in DatasetCatalog


def test_file_given_for_a_folder(tmp_path, name):
    message = _sem_seg_error(
        tmp_path, name, lambda d: d["splits"]["train"].update(label_root="data/train/labels/a.png")
    )
    assert (
        "splits.train.label_root: " in message
        and "a.png is a file (expected an existing folder" in message
    )


def test_unreadable_declaration_files(tmp_path):
    assert _error(tmp_path / "none.yaml").endswith(
        "none.yaml: file: not found (expected an existing YAML or JSON file)"
    )
    (tmp_path / "bad.yaml").write_text("family: [sem_seg\n")
    assert "bad.yaml: file: cannot be parsed" in _error(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- sem_seg\n")
    assert "list.yaml: file: holds list (expected a mapping of keys)" in _error(
        tmp_path / "list.yaml"
    )


def test_panoptic_without_categories_anywhere(tmp_path, name):
    json_file = write_panoptic_set(tmp_path / "pan", ["a"])
    json_file.write_text(json.dumps({**json.loads(json_file.read_text()), "categories": []}))
    split = {
        "image_root": "pan/images",
        "panoptic_root": "pan/panoptic",
        "panoptic_json": str(json_file),
    }
    decl = declare(
        tmp_path / "pan.yaml", {"family": "coco_panoptic", "name": name, "splits": {"train": split}}
    )
    assert "pan.yaml: categories: not given, and not readable from" in _error(decl)


def test_multitask_errors_leave_nothing_registered(tmp_path, name):
    write_broden(tmp_path / "broden")
    data = {"family": "multitask", "name": name, "root": "broden", "splits": {"train": {}}}
    message = _error(declare(tmp_path / "mt.yaml", data))
    assert "mt.yaml: splits: got {'train': {}} (expected a non-empty list of split names" in message
    data["splits"] = ["train", "test"]  # index.csv has no "test" row
    message = _error(declare(tmp_path / "mt.yaml", data))
    assert "mt.yaml: splits.test: " in message and "no rows of split 'test'" in message
    assert f"{name}_train" not in DatasetCatalog and f"{name}_test" not in DatasetCatalog


def test_names_already_taken(tmp_path, name):
    data = sem_seg_declaration(tmp_path, "synthetic_scenes_sem_seg")
    message = _error(declare(tmp_path / "builtin.yaml", data))
    assert (
        "builtin.yaml: name: dataset 'synthetic_scenes_sem_seg_train' (split 'train') is "
        "already registered by other code" in message
    )

    decl = declare(tmp_path / "my.yaml", sem_seg_declaration(tmp_path, name))
    register_declared(decl)
    declare(decl, sem_seg_declaration(tmp_path, name, ignore_label=254))  # edited in between
    assert "is already registered by a declaration with other contents" in _error(decl)


def test_register_must_be_a_list(tmp_path):
    cfg = get_cfg()
    with pytest.raises(ValueError, match="Type mismatch"):
        cfg.merge_from_list(["DATASETS.REGISTER", "my_data.yaml"])
    cfg.DATASETS.REGISTER = "my_data.yaml"
    with pytest.raises(DeclarationError, match=r"DATASETS.REGISTER: got the string 'my_data.yaml'"):
        register_declared_datasets(cfg)
