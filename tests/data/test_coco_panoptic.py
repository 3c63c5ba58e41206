"""COCO panoptic loading and registration, the builtin COCO / Cityscapes panoptic registrations and
datasets/prepare_panoptic_fpn.py, on tiny hand-made trees with hand-computed expectations."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from uper_parsing.data import DatasetCatalog, MetadataCatalog
from uper_parsing.data.datasets import (
    DATASETS_ENV,
    load_coco_panoptic_json,
    panoptic_metadata,
    register_coco_panoptic,
)
from uper_parsing.data.datasets.cityscapes_panoptic import (
    cityscapes_panoptic_categories,
    load_cityscapes_panoptic,
)
from uper_parsing.data.datasets.coco_panoptic_categories import COCO_PANOPTIC_CATEGORIES
from uper_parsing.data.panoptic_utils import read_panoptic

REPO = Path(__file__).resolve().parents[2]

# Image 139 (4 x 5): person (cat 1) id 1, crowd car (cat 3) id 2, banner (92) id 5, rug (200) id 7.
IDS_139 = np.array(
    [[0, 1, 1, 5, 5],
     [2, 2, 1, 5, 5],
     [2, 2, 7, 7, 0],
     [7, 7, 7, 7, 0]]
)  # fmt: skip
SEGMENTS_139 = [
    {"id": 1, "category_id": 1, "iscrowd": 0, "area": 3, "bbox": [1, 0, 2, 2]},
    {"id": 2, "category_id": 3, "iscrowd": 1, "area": 4, "bbox": [0, 1, 2, 2]},
    {"id": 5, "category_id": 92, "iscrowd": 0, "area": 4, "bbox": [3, 0, 2, 2]},
    {"id": 7, "category_id": 200, "iscrowd": 0, "area": 6, "bbox": [0, 2, 4, 2]},
]
# Semantic map: things -> 0, banner (stuff 0) -> 1, rug (stuff 52) -> 53, void -> 255.
SEM_139 = np.array(
    [[255, 0, 0, 1, 1],
     [0, 0, 0, 1, 1],
     [0, 0, 53, 53, 255],
     [53, 53, 53, 53, 255]]
)  # fmt: skip
# Image 285 (3 x 3): one wall-other-merged (199 = stuff 51) segment with id 300 (R 44, G 1).
IDS_285 = np.full((3, 3), 300)
SEGMENTS_285 = [{"id": 300, "category_id": 199, "iscrowd": 0, "area": 9, "bbox": [0, 0, 3, 3]}]


def _encode(ids: np.ndarray) -> np.ndarray:
    """(H, W) ids -> (H, W, 3) uint8 BGR of the RGB encoding R + 256 G + 256^2 B (for cv2)."""
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    return rgb[..., ::-1].copy()


def _coco_json() -> dict:
    return {
        "images": [
            {"id": 139, "file_name": "000000000139.jpg", "height": 4, "width": 5},
            {"id": 285, "file_name": "000000000285.jpg", "height": 3, "width": 3},
        ],
        "annotations": [
            {"image_id": 139, "file_name": "000000000139.png", "segments_info": SEGMENTS_139},
            {"image_id": 285, "file_name": "000000000285.png", "segments_info": SEGMENTS_285},
        ],
        "categories": COCO_PANOPTIC_CATEGORIES,
    }


def make_coco_tree(coco: Path, split: str = "val", data: dict | None = None) -> Path:
    """A COCO 2017 panoptic tree with the two images above; returns the JSON path."""
    (coco / "annotations").mkdir(parents=True, exist_ok=True)
    for sub in (f"{split}2017", f"panoptic_{split}2017"):
        (coco / sub).mkdir(exist_ok=True)
    for stem, ids in (("000000000139", IDS_139), ("000000000285", IDS_285)):
        cv2.imwrite(str(coco / f"panoptic_{split}2017" / f"{stem}.png"), _encode(ids))
        cv2.imwrite(str(coco / f"{split}2017" / f"{stem}.jpg"), np.zeros((*ids.shape, 3), np.uint8))
    json_file = coco / "annotations" / f"panoptic_{split}2017.json"
    json_file.write_text(json.dumps(data or _coco_json()))
    return json_file


def _load(coco: Path, json_file: Path) -> list[dict]:
    return load_coco_panoptic_json(
        json_file,
        coco / "val2017",
        coco / "panoptic_val2017",
        {"categories": COCO_PANOPTIC_CATEGORIES},
    )


def _load_prepare_script():
    spec = importlib.util.spec_from_file_location(
        "prepare_panoptic_fpn", REPO / "datasets" / "prepare_panoptic_fpn.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["prepare_panoptic_fpn"] = module  # so that pool workers can unpickle its function
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------- categories


def test_coco_panoptic_categories_are_the_133_official_ones():
    cats = COCO_PANOPTIC_CATEGORIES
    assert len(cats) == 133
    assert sum(c["isthing"] for c in cats) == 80
    assert sum(not c["isthing"] for c in cats) == 53
    assert len({c["id"] for c in cats}) == 133 and len({c["name"] for c in cats}) == 133
    assert [c["id"] for c in cats] == sorted(c["id"] for c in cats)
    assert max(c["id"] for c in cats if c["isthing"]) == 90
    assert min(c["id"] for c in cats if not c["isthing"]) == 92
    by_id = {c["id"]: c for c in cats}
    assert by_id[1] == {"id": 1, "name": "person", "isthing": 1, "color": [220, 20, 60]}
    assert by_id[10]["name"] == "traffic light" and by_id[90]["name"] == "toothbrush"
    assert by_id[92] == {"id": 92, "name": "banner", "isthing": 0, "color": [255, 255, 128]}
    assert by_id[200] == {"id": 200, "name": "rug-merged", "isthing": 0, "color": [250, 141, 255]}
    assert 12 not in by_id and 26 not in by_id  # ids COCO skips


def test_panoptic_metadata_from_categories():
    cats = [
        {"id": 7, "name": "road", "isthing": 0, "color": [1, 2, 3]},
        {"id": 3, "name": "car", "isthing": 1, "color": [4, 5, 6]},
        {"id": 9, "name": "sky", "isthing": 0},
        {"id": 1, "name": "person", "isthing": 1, "color": [7, 8, 9]},
    ]
    meta = panoptic_metadata(cats)
    assert meta["categories"] == cats
    assert meta["thing_classes"] == ["car", "person"]
    assert meta["thing_colors"] == [(4, 5, 6), (7, 8, 9)]
    assert meta["stuff_classes"] == ["road", "sky"]
    assert meta["stuff_colors"][0] == (1, 2, 3) and len(meta["stuff_colors"][1]) == 3
    assert meta["thing_dataset_id_to_contiguous_id"] == {3: 0, 1: 1}
    assert meta["stuff_dataset_id_to_contiguous_id"] == {7: 0, 9: 1}


@pytest.mark.parametrize(
    "cats, match",
    [
        ([], "non-empty"),
        ([{"id": 1, "name": "a", "isthing": 1}, {"id": 1, "name": "b", "isthing": 0}], "id 1"),
        ([{"id": 4, "name": "a", "isthing": 2}], "id 4 has isthing=2"),
        ([{"id": 5, "name": "a"}], "no 'isthing'"),
        ([{"id": 6, "name": "a", "isthing": 0, "color": [1, 2]}], "id 6 has color"),
    ],
)
def test_panoptic_metadata_rejects_bad_categories(cats, match):
    with pytest.raises(ValueError, match=match):
        panoptic_metadata(cats, where="mine.json")


def test_builtin_coco_metadata():
    meta = MetadataCatalog.get("coco_2017_val_panoptic")
    assert meta.evaluator_type == "coco_panoptic_seg" and meta.ignore_label == 255
    assert len(meta.thing_classes) == 80 and len(meta.stuff_classes) == 53
    assert meta.thing_classes[0] == "person" and meta.stuff_classes[-1] == "rug-merged"
    assert meta.thing_dataset_id_to_contiguous_id[90] == 79
    assert meta.stuff_dataset_id_to_contiguous_id[92] == 0
    assert meta.stuff_dataset_id_to_contiguous_id[200] == 52


def test_cityscapes_metadata_has_8_things_and_11_stuff():
    meta = MetadataCatalog.get("cityscapes_fine_panoptic_train")
    things = ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
    assert meta.thing_classes == things
    assert meta.stuff_classes == [
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
        "traffic sign", "vegetation", "terrain", "sky",
    ]  # fmt: skip
    assert meta.thing_dataset_id_to_contiguous_id == {24: 0, 25: 1, 26: 2, 27: 3, 28: 4,
                                                      31: 5, 32: 6, 33: 7}  # fmt: skip
    assert meta.stuff_dataset_id_to_contiguous_id[7] == 0  # road
    assert meta.stuff_dataset_id_to_contiguous_id[23] == 10  # sky
    assert meta.thing_colors[0] == (220, 20, 60) and meta.stuff_colors[0] == (128, 64, 128)
    assert meta.evaluator_type == "coco_panoptic_seg" and meta.sem_seg_root is None


# --------------------------------------------------------------------------------------- loader


def test_loader_returns_contract_dicts(tmp_path):
    coco = tmp_path / "coco"
    dicts = _load(coco, make_coco_tree(coco))
    assert [d["image_id"] for d in dicts] == [139, 285]
    d = dicts[0]
    assert d["file_name"] == str(coco / "val2017" / "000000000139.jpg")
    assert d["pan_seg_file_name"] == str(coco / "panoptic_val2017" / "000000000139.png")
    assert (d["height"], d["width"]) == (4, 5)
    assert "sem_seg_file_name" not in d
    assert d["segments_info"] == [
        {"id": 1, "category_id": 0, "isthing": True, "iscrowd": 0, "area": 3, "bbox": [1, 0, 2, 2]},
        {"id": 2, "category_id": 2, "isthing": True, "iscrowd": 1, "area": 4, "bbox": [0, 1, 2, 2]},
        {"id": 5, "category_id": 0, "isthing": False, "iscrowd": 0, "area": 4,
         "bbox": [3, 0, 2, 2]},
        {"id": 7, "category_id": 52, "isthing": False, "iscrowd": 0, "area": 6,
         "bbox": [0, 2, 4, 2]},
    ]  # fmt: skip
    assert (
        dicts[1]["segments_info"][0]["category_id"] == 51
        and not dicts[1]["segments_info"][0]["isthing"]
    )
    np.testing.assert_array_equal(read_panoptic(d), IDS_139)
    np.testing.assert_array_equal(read_panoptic(dicts[1]), IDS_285)


def _broken(mutate) -> dict:
    data = copy.deepcopy(_coco_json())
    mutate(data)
    return data


@pytest.mark.parametrize(
    "mutate, expected",
    [
        # segment of image 139 with a category the metadata does not have
        (
            lambda d: d["annotations"][0]["segments_info"][2].update(category_id=12),
            ["000000000139.png", "segment id 5", "category_id 12"],
        ),
        # the JSON says banner (92) is a thing
        (
            lambda d: d["categories"][80].update(isthing=1),
            ["category id 92", "isthing=1", "stuff"],
        ),
        # annotation of an image that is not in "images"
        (
            lambda d: d["annotations"][1].update(image_id=999),
            ["000000000285.png", "image_id 999"],
        ),
        # segment id 5 twice in image 139
        (
            lambda d: d["annotations"][0]["segments_info"][3].update(id=5),
            ["segment id 5 appears twice", "000000000139.png", "139"],
        ),
    ],
)
def test_loader_checks_name_json_image_and_id(tmp_path, mutate, expected):
    coco = tmp_path / "coco"
    json_file = make_coco_tree(coco, data=_broken(mutate))
    with pytest.raises(ValueError) as info:
        _load(coco, json_file)
    message = str(info.value)
    for part in [str(json_file), *expected]:
        assert part in message, message


def test_loader_missing_files_point_at_readme(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"panoptic_val2017\.json.*datasets/README\.md"):
        _load(tmp_path, tmp_path / "annotations" / "panoptic_val2017.json")


# --------------------------------------------------------------------------------- registration


def test_register_coco_panoptic_is_lazy_and_sets_metadata(tmp_path, fresh_name):
    coco = tmp_path / "coco"
    categories = [c for c in COCO_PANOPTIC_CATEGORIES if c["id"] in (1, 3, 92, 199, 200)]
    register_coco_panoptic(
        fresh_name,
        {"categories": categories, "note": "mine"},
        image_root=coco / "val2017",
        panoptic_root=coco / "panoptic_val2017",
        panoptic_json=coco / "annotations" / "panoptic_val2017.json",
    )
    meta = MetadataCatalog.get(fresh_name)
    assert meta.thing_classes == ["person", "car"]
    assert meta.stuff_classes == ["banner", "wall-other-merged", "rug-merged"]
    assert meta.note == "mine" and meta.sem_seg_root is None
    assert meta.panoptic_root == str(coco / "panoptic_val2017")
    assert meta.evaluator_type == "coco_panoptic_seg" and meta.ignore_label == 255
    with pytest.raises(FileNotFoundError, match="datasets/README.md"):
        DatasetCatalog.get(fresh_name)  # nothing on disk yet
    make_coco_tree(coco)
    dicts = DatasetCatalog.get(fresh_name)
    # contiguous ids of the user's category list: car = thing 1, rug = stuff 2
    assert [(s["id"], s["category_id"]) for s in dicts[0]["segments_info"]] == [
        (1, 0), (2, 1), (5, 0), (7, 2)
    ]  # fmt: skip
    assert dicts[1]["segments_info"][0]["category_id"] == 1


def test_builtin_coco_missing_folder_error(tmp_path, monkeypatch):
    monkeypatch.setenv(DATASETS_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        DatasetCatalog.get("coco_2017_val_panoptic")
    assert str(tmp_path / "coco") in str(info.value)
    assert "datasets/README.md" in str(info.value)


def test_prepare_panoptic_fpn_and_builtin_coco(tmp_path, monkeypatch):
    monkeypatch.setenv(DATASETS_ENV, str(tmp_path))
    coco = tmp_path / "coco"
    make_coco_tree(coco)
    meta = MetadataCatalog.get("coco_2017_val_panoptic")
    assert meta.sem_seg_root is None
    # box / mask AP use COCO's instance annotations when they are there, as detectron2 does
    assert meta.instances_json is None
    instances = coco / "annotations" / "instances_val2017.json"
    instances.write_text("{}")
    assert meta.instances_json == str(instances)
    before = DatasetCatalog.get("coco_2017_val_panoptic")
    assert "sem_seg_file_name" not in before[0]

    script = _load_prepare_script()
    assert script.main(["--coco-root", str(coco), "--splits", "val", "--workers", "2"]) == 0
    out = coco / "panoptic_semseg_val2017"
    sem = cv2.imread(str(out / "000000000139.png"), cv2.IMREAD_UNCHANGED)
    assert sem.dtype == np.uint8
    np.testing.assert_array_equal(sem, SEM_139)
    sem = cv2.imread(str(out / "000000000285.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(sem, np.full((3, 3), 52))
    assert sorted(p.name for p in out.iterdir()) == ["000000000139.png", "000000000285.png"]
    # a second run skips both files
    assert script.convert_split(coco, "val", workers=1) == (0, 2)

    assert meta.sem_seg_root == str(out)
    after = DatasetCatalog.get("coco_2017_val_panoptic")
    assert after[0]["sem_seg_file_name"] == str(out / "000000000139.png")
    assert after[0]["file_name"] == str(coco / "val2017" / "000000000139.jpg")


# ------------------------------------------------------------------------------------ cityscapes


def test_cityscapes_categories_match_labels():
    cats = cityscapes_panoptic_categories()
    assert len(cats) == 19
    assert cats[0] == {"id": 7, "name": "road", "isthing": 0, "color": [128, 64, 128]}
    assert cats[-1] == {"id": 33, "name": "bicycle", "isthing": 1, "color": [119, 11, 32]}


def test_builtin_cityscapes_missing_folder_error(tmp_path, monkeypatch):
    monkeypatch.setenv(DATASETS_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"cityscapes.*datasets/README\.md"):
        DatasetCatalog.get("cityscapes_fine_panoptic_train")


def test_builtin_cityscapes_reads_create_panoptic_imgs_output(tmp_path, monkeypatch, capsys):
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    monkeypatch.setenv(DATASETS_ENV, str(tmp_path))
    gt = tmp_path / "cityscapes" / "gtFine"
    (gt / "val" / "aachen").mkdir(parents=True)
    # label ids per pixel: road 7, car instance 26001, crowd person 24, ego vehicle 1 (ignored)
    instance_ids = np.array([[7, 7, 26001, 26001], [1, 24, 26001, 7]], dtype=np.uint16)
    stem = "aachen_000000_000019"
    cv2.imwrite(str(gt / "val" / "aachen" / f"{stem}_gtFine_instanceIds.png"), instance_ids)
    convert2panoptic(str(gt), str(gt), setNames=["val"])
    capsys.readouterr()
    (d,) = DatasetCatalog.get("cityscapes_fine_panoptic_val")
    leftimg = tmp_path / "cityscapes" / "leftImg8bit" / "val" / "aachen"
    assert d["file_name"] == str(leftimg / f"{stem}_leftImg8bit.png")
    assert d["image_id"] == stem and (d["height"], d["width"]) == (2, 4)
    got = [(s["id"], s["category_id"], s["isthing"], s["iscrowd"], s["area"], s["bbox"])
           for s in d["segments_info"]]  # fmt: skip
    assert got == [
        (7, 0, False, 0, 3, [0, 0, 4, 2]),
        (24, 0, True, 1, 1, [1, 1, 1, 1]),
        (26001, 2, True, 0, 3, [2, 0, 2, 2]),
    ]
    expected = np.array([[7, 7, 26001, 26001], [0, 24, 26001, 7]])
    np.testing.assert_array_equal(read_panoptic(d), expected)
    direct = load_cityscapes_panoptic(
        leftimg.parent, gt / "cityscapes_panoptic_val", gt / "cityscapes_panoptic_val.json"
    )
    assert direct == [d]
