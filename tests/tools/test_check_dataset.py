"""tools/check_dataset.py on tiny datasets written to tmp_path, one fault class each: the exit
status and the exact line the tool prints for every fault."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from _tools import load_tool

from uper_parsing.data import DatasetCatalog, MetadataCatalog, register_multitask, register_sem_seg
from uper_parsing.data.datasets import register_coco_panoptic

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "data"))  # the data tests' dataset writers
from _data_helpers import (  # noqa: E402
    PANOPTIC_CATEGORIES,
    SEM_SEG_CLASSES,
    truncate,
    write_panoptic_set,
    write_sem_seg_set,
)
from _multitask_helpers import write_broden, write_numbers  # noqa: E402

CONFIG = str(ROOT / "configs/quickstart/upernet_R18_synthetic.yaml")


@pytest.fixture(scope="module")
def tool():
    return load_tool("check_dataset")


@pytest.fixture
def name(request):
    """A dataset name unique to the test, removed from both catalogs afterwards."""
    name = f"check_{request.node.name}"
    yield name
    for catalog in (DatasetCatalog, MetadataCatalog):
        if name in catalog:
            catalog.remove(name)


def _run(tool, capsys, *args: str) -> tuple[int, list[str]]:
    code = tool.main(["--config-file", CONFIG, "--workers", "2", "--no-progress", *args])
    return code, capsys.readouterr().out.splitlines()


def _sem_seg(tmp_path: Path, name: str, stems=("a", "b")) -> Path:
    root = write_sem_seg_set(tmp_path, stems)
    register_sem_seg(
        name, image_root=root / "images", label_root=root / "labels", metadata=SEM_SEG_CLASSES
    )
    return root


def test_clean_dataset_from_the_config_exits_0(tool, capsys, tmp_path, name):
    _sem_seg(tmp_path, name)
    code, out = _run(tool, capsys, "DATASETS.TRAIN", f'("{name}",)', "DATASETS.TEST", "()")
    assert code == 0
    assert out == [f"No problem found in {name} (2 of 2 images)"]


def test_sem_seg_faults(tool, capsys, tmp_path, name):
    root = _sem_seg(tmp_path, name, stems=("a", "b", "c", "d"))
    truncate(root / "images/b.jpg")
    cv2.imwrite(str(root / "labels/c.png"), np.zeros((20, 32), np.uint8))
    label = cv2.imread(str(root / "labels/d.png"), cv2.IMREAD_UNCHANGED)
    label[0, :2] = (7, 255)  # 255 is the ignore label: fine
    cv2.imwrite(str(root / "labels/d.png"), label)
    code, out = _run(tool, capsys, name)
    assert code == 1
    assert out == [
        f"{root}/images/b.jpg: file_name: truncated (the JPEG data ends before its end-of-image "
        "marker 0xFFD9) (expected a complete image)",
        f"{root}/labels/c.png: size: (H, W) = (20, 32) (expected (24, 32), its image's size)",
        f"{root}/labels/d.png: label values: [7] (expected train ids 0..2 (3 stuff_classes) or "
        "the ignore_label 255; stored values used as train ids)",
        f"3 problem(s) in 1 of 1 dataset(s): {name} (4 of 4 images)",
    ]


def test_missing_label_file(tool, capsys, tmp_path, name):
    root = _sem_seg(tmp_path, name)
    (root / "labels/b.png").unlink()
    code, out = _run(tool, capsys, name)
    assert code == 1
    assert out[0] == (
        f"{name}: dataset: cannot be loaded (ValueError: 1 label file(s) missing: "
        f"{root}/labels/b.png; each file in {root}/images needs one) (expected loadable (no image "
        "was checked))"
    )


def test_jpeg_cut_in_its_header(tool, capsys, tmp_path, name):
    root = _sem_seg(tmp_path, name)
    truncate(root / "images/b.jpg", keep=0.3)
    code, out = _run(tool, capsys, name)
    assert code == 1
    assert out[0].startswith(  # then PIL's words
        f"{name}: dataset: cannot be loaded (OSError: Cannot read the header of image "
        f"{root}/images/b.jpg: "
    )


def _panoptic(tmp_path: Path, name: str, mutate=None) -> Path:
    json_file = write_panoptic_set(tmp_path, ("a", "b", "c", "d"))
    if mutate is not None:
        data = json.loads(json_file.read_text())
        mutate(data)
        json_file.write_text(json.dumps(data))
    register_coco_panoptic(
        name, {"categories": PANOPTIC_CATEGORIES}, tmp_path / "images", tmp_path / "panoptic",
        json_file,
    )  # fmt: skip
    return json_file


def _panoptic_faults(data: dict) -> None:
    data["images"].append(dict(data["images"][0]))  # image id 1 listed twice
    segments = data["annotations"][3]["segments_info"]
    segments.append({"id": 9, "category_id": 2, "iscrowd": 0, "area": 1, "bbox": [0, 0, 1, 1]})


def test_panoptic_faults(tool, capsys, tmp_path, name):
    json_file = _panoptic(tmp_path, name, _panoptic_faults)
    (tmp_path / "images/b.jpg").unlink()
    png = cv2.imread(str(tmp_path / "panoptic/c.png"))
    png[0, 0] = (0, 0, 3)  # BGR of segment id 3, which the JSON does not list
    cv2.imwrite(str(tmp_path / "panoptic/c.png"), png)
    code, out = _run(tool, capsys, name)
    assert code == 1
    assert out == [
        f"{json_file}: images id: 1 listed 2 times (expected unique image ids)",
        f"{tmp_path}/images/b.jpg: file_name: file not found (expected an image file)",
        f"{tmp_path}/panoptic/c.png: segment ids: [3] not in segments_info (expected each "
        "non-zero id of the PNG listed in the JSON)",
        f"{tmp_path}/panoptic/d.png: segments_info: ids [9] absent from the PNG (expected each "
        "listed segment in the PNG)",
        f"4 problem(s) in 1 of 1 dataset(s): {name} (4 of 4 images)",
    ]


@pytest.mark.parametrize(
    "text, line",
    [
        ("", "file: empty (expected a COCO panoptic JSON)"),
        ('{"images": [', "JSON: malformed (Expecting value at line 1 column 13) (expected valid "
         "JSON)"),
    ],
)  # fmt: skip
def test_empty_or_malformed_json(tool, capsys, tmp_path, name, text, line):
    json_file = _panoptic(tmp_path, name)
    json_file.write_text(text)
    code, out = _run(tool, capsys, name)
    assert code == 1
    assert out[0] == f"{json_file}: {line}"
    assert out[1].startswith(f"{name}: dataset: cannot be loaded (JSONDecodeError: ")


def _broden(tmp_path: Path, name: str, extra_rows: str = "") -> Path:
    root = write_broden(tmp_path / "broden")
    with open(root / "index.csv", "a") as f:
        f.write(extra_rows)
    register_multitask(name, root=root, split="train")
    return root


def test_broden_unknown_number_and_duplicate_image(tool, capsys, tmp_path, name):
    root = _broden(tmp_path, name, "a.png,train,6,8,6,8,a_object.png,,,40,,pascal\n")
    write_numbers(root / "images/a_material.png", np.full((6, 8), 99))  # 99: no label number
    code, out = _run(tool, capsys, name)
    assert code == 1
    material = (
        f"{root}/images/a_material.png: material label numbers: [99] (expected 0 or a 'material' "
        "number of label.csv / c_material.csv)"
    )
    assert out == [
        f"{root}/images/a.png: image_id: 'a', also the id of {root}/images/a.png (expected unique "
        "image ids)",
        material,
        f"2 problem(s) in 1 of 1 dataset(s): {name} (3 of 3 images)",
    ]


def test_broden_malformed_csv_and_scene_number(tool, capsys, tmp_path, name):
    rows = "t.png,train,six,4,4,4,,,,,60,dtd\na.png,train,6,8,6,8,,,,99,,pascal\n"
    root = _broden(tmp_path, name, rows)
    (root / "c_texture.csv").write_text("")
    code, out = _run(tool, capsys, name)
    assert code == 1
    assert out[:3] == [
        f"{root}/c_texture.csv: header: empty file (expected a header with columns ['code', "
        "'number', 'name'])",
        f"{root}/index.csv: row 5 column 'ih': 'six' (expected an integer)",
        f"{root}/index.csv: row 6 scene: '99' (expected a number of c_scene.csv)",
    ]
    assert out[3].startswith(f"{name}: dataset: cannot be loaded (ValueError: ")
    assert len(out) == 5  # and the summary


@pytest.mark.parametrize(
    "args, message",
    [
        (["--config-file", CONFIG, "no_such"], "Datasets not registered: ['no_such']"),
        (["--config-file", CONFIG, "SOLVER.BASE_LRR", "0.1"], "config key 'SOLVER.BASE_LRR'"),
        (["--config-file", "absent.yaml"], "Cannot use config absent.yaml"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2(tool, capsys, args, message):
    assert tool.main(["--no-progress", *args]) == 2
    assert message in capsys.readouterr().err
