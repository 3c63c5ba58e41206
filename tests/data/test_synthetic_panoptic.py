"""The synthetic scenes in the COCO panoptic format: the writer's files against the rendered
records, and the lazy ``<prefix>_panoptic_{train,val}`` registration."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from uper_parsing.data import DatasetCatalog, MetadataCatalog, SyntheticParams
from uper_parsing.data.datasets import DATASETS_ENV, register_synthetic_panoptic
from uper_parsing.data.datasets.synthetic import (
    SYNTHETIC_CLASSES,
    generate_synthetic_scenes,
    render_scene,
)
from uper_parsing.data.datasets.synthetic.generate import split_indices
from uper_parsing.data.panoptic_utils import read_panoptic, read_panoptic_semantic

PARAMS = SyntheticParams(seed=5, image_size=64, num_train=4, num_val=2, formats=("coco_panoptic",))
STUFF_IDS = [i + 1 for i, c in enumerate(SYNTHETIC_CLASSES) if c.kind == "stuff"]
THING_IDS = [i + 1 for i, c in enumerate(SYNTHETIC_CLASSES) if c.kind == "thing"]


@pytest.fixture(scope="module")
def panoptic_set(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("synthetic") / "set"
    generate_synthetic_scenes(folder, PARAMS)
    return folder / "coco_panoptic"


def _decode(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    rgb = bgr[..., ::-1].astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def _expected_semantic(obj: np.ndarray) -> np.ndarray:
    """Things -> 0, stuff class id c -> 1 + its index among the stuff classes, 0 -> 255."""
    sem = np.full(obj.shape, 255, np.int64)
    for c in THING_IDS:
        sem[obj == c] = 0
    for s, c in enumerate(STUFF_IDS):
        sem[obj == c] = 1 + s
    return sem


def test_categories(panoptic_set):
    data = json.loads((panoptic_set / "panoptic_train.json").read_text())
    cats = data["categories"]
    assert [c["id"] for c in cats] == list(range(1, 11))
    assert [c["name"] for c in cats] == [c.name for c in SYNTHETIC_CLASSES]
    assert [c["name"] for c in cats if c["isthing"]] == ["tree", "house", "car", "lamp", "table"]
    assert [c["name"] for c in cats if not c["isthing"]] == [
        "sky", "wall", "floor", "grass", "water"
    ]  # fmt: skip
    assert cats[0]["color"] == [70, 130, 180]


@pytest.mark.parametrize("split", ["train", "val"])
def test_writer_output_matches_records(panoptic_set, split):
    data = json.loads((panoptic_set / f"panoptic_{split}.json").read_text())
    indices = split_indices(PARAMS)[split]
    assert len(data["images"]) == len(data["annotations"]) == len(indices)
    images = {img["id"]: img for img in data["images"]}
    for i, (index, ann) in enumerate(zip(indices, data["annotations"])):
        stem = f"synthetic_{split}_{i:05d}"
        record = render_scene(PARAMS.seed, index, PARAMS.image_size)
        image = images[ann["image_id"]]
        assert image == {"id": i + 1, "file_name": f"{stem}.jpg", "height": 64, "width": 64}
        assert ann["file_name"] == f"{stem}.png"
        assert cv2.imread(str(panoptic_set / "images" / split / f"{stem}.jpg")).shape == (64, 64, 3)

        ids = _decode(panoptic_set / f"panoptic_{split}" / ann["file_name"])
        segments = ann["segments_info"]
        assert sorted(s["id"] for s in segments) == sorted(np.unique(ids[ids > 0]).tolist())
        np.testing.assert_array_equal(ids == 0, record.object == 0)
        stuff_present = [c for c in STUFF_IDS if (record.object == c).any()]
        expected_ids = stuff_present + [1000 * inst.class_id + inst.id for inst in record.instances]
        assert [s["id"] for s in segments] == expected_ids
        assert any(s["category_id"] in THING_IDS for s in segments)
        for s in segments:
            if s["category_id"] in STUFF_IDS:
                truth = record.object == s["category_id"]
                assert s["id"] == s["category_id"]
            else:
                inst = s["id"] % 1000
                truth = record.instance == inst
                assert s["category_id"] == s["id"] // 1000 == record.object[truth][0]
            mask = ids == s["id"]
            np.testing.assert_array_equal(mask, truth)
            rows, cols = np.nonzero(mask)
            assert s["area"] == len(rows)
            assert s["bbox"] == [cols.min(), rows.min(), cols.max() - cols.min() + 1,
                                 rows.max() - rows.min() + 1]  # fmt: skip
            assert s["iscrowd"] == 0

        sem = cv2.imread(str(panoptic_set / f"panoptic_semseg_{split}" / ann["file_name"]), -1)
        assert sem.dtype == np.uint8 and sem.shape == (64, 64)
        np.testing.assert_array_equal(sem, _expected_semantic(record.object))


@pytest.fixture
def registered_panoptic(tmp_path, monkeypatch):
    monkeypatch.setenv(DATASETS_ENV, str(tmp_path))
    names = register_synthetic_panoptic("synth_pan", params=PARAMS)
    yield names
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_registration_is_lazy_and_loads_contract_dicts(registered_panoptic, tmp_path):
    assert registered_panoptic == ["synth_pan_panoptic_train", "synth_pan_panoptic_val"]
    meta = MetadataCatalog.get("synth_pan_panoptic_val")
    assert meta.thing_classes == ["tree", "house", "car", "lamp", "table"]
    assert meta.stuff_classes == ["sky", "wall", "floor", "grass", "water"]
    assert meta.thing_dataset_id_to_contiguous_id == {6: 0, 7: 1, 8: 2, 9: 3, 10: 4}
    assert meta.stuff_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2, 4: 3, 5: 4}
    assert meta.evaluator_type == "coco_panoptic_seg"
    root = tmp_path / "synth_pan" / "coco_panoptic"
    assert meta.panoptic_json == str(root / "panoptic_val.json")
    assert meta.sem_seg_root == str(root / "panoptic_semseg_val")
    assert not (tmp_path / "synth_pan").exists()  # metadata needs no generated data

    dicts = DatasetCatalog.get("synth_pan_panoptic_val")
    assert len(dicts) == 2 and (tmp_path / "synth_pan" / "meta.json").is_file()
    d = dicts[0]
    assert d["file_name"] == str(root / "images" / "val" / "synthetic_val_00000.jpg")
    assert d["sem_seg_file_name"] == str(root / "panoptic_semseg_val" / "synthetic_val_00000.png")
    record = render_scene(PARAMS.seed, split_indices(PARAMS)["val"][0], PARAMS.image_size)
    for s in d["segments_info"]:
        if s["isthing"]:
            assert s["category_id"] == THING_IDS.index(s["id"] // 1000)
        else:
            assert s["category_id"] == STUFF_IDS.index(s["id"])
    ids = read_panoptic(d)
    derived = read_panoptic_semantic({k: v for k, v in d.items() if k != "sem_seg_file_name"}, meta)
    np.testing.assert_array_equal(read_panoptic_semantic(d, meta), derived)
    np.testing.assert_array_equal(derived, _expected_semantic(record.object))
    assert ids.shape == (64, 64)


def test_registration_needs_the_format():
    with pytest.raises(ValueError, match="coco_panoptic"):
        register_synthetic_panoptic("nope", params=SyntheticParams(formats=("ade",)))
