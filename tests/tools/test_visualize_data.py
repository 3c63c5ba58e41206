"""tools/visualize_data.py on a tiny synthetic set of every family (semantic, panoptic,
multi-task), from the annotations and from the training loader."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from _tools import load_tool

from uper_parsing.data import DatasetCatalog, MetadataCatalog, read_image
from uper_parsing.data.datasets import (
    DATASETS_ENV,
    SyntheticParams,
    register_synthetic_multitask,
    register_synthetic_panoptic,
    register_synthetic_scenes,
)
from uper_parsing.data.datasets.synthetic import prepare_synthetic_scenes
from uper_parsing.visualization import Visualizer

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "vis_tiny"
PARAMS = SyntheticParams(
    seed=5, image_size=64, num_train=4, num_val=2, formats=("ade", "broden", "coco_panoptic")
)
# family: (quickstart config, training set, the metadata entry holding its class colours)
FAMILIES = {
    "sem_seg": ("upernet_R18_synthetic.yaml", f"{PREFIX}_sem_seg_train", "stuff_colors"),
    "panoptic": ("panoptic_fpn_R18_synthetic.yaml", f"{PREFIX}_panoptic_train", "thing_colors"),
    "multitask": (
        "unified_parsing_R18_synthetic.yaml",
        f"{PREFIX}_multitask_train",
        "object_colors",
    ),
}


@pytest.fixture(scope="module")
def tool():
    return load_tool("visualize_data")


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory) -> Path:
    """A datasets root holding the tiny set in all three layouts, registered as ``vis_tiny_*``."""
    root = tmp_path_factory.mktemp("datasets")
    prepare_synthetic_scenes(root / PREFIX, PARAMS)
    for family, register in [
        ("sem_seg", register_synthetic_scenes),
        ("multitask", register_synthetic_multitask),
        ("panoptic", register_synthetic_panoptic),
    ]:
        if f"{PREFIX}_{family}_train" not in DatasetCatalog:
            register(PREFIX, params=PARAMS)
    return root


def run(tool, family: str, source: str, output: Path, *opts: str) -> int:
    config, name, _ = FAMILIES[family]
    return tool.main(
        ["--config-file", str(ROOT / "configs/quickstart" / config), "--source", source,
         "--output", str(output), "--num-images", "2", "DATASETS.TRAIN", f'("{name}",)',
         "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2", *opts]
    )  # fmt: skip


def read_rgb(path: Path) -> np.ndarray:
    return cv2.imread(str(path))[:, :, ::-1]


def swatches(picture: np.ndarray, colors) -> int:
    """How many of ``colors`` appear exactly on at least 25 pixels (legend swatches)."""
    return sum(int((picture == c).all(axis=2).sum() >= 25) for c in colors)


@pytest.mark.parametrize("family", FAMILIES)
def test_annotation_pictures_are_the_visualizers(
    tool, datasets_root, monkeypatch, tmp_path, family
):
    monkeypatch.setenv(DATASETS_ENV, str(datasets_root))
    assert run(tool, family, "annotation", tmp_path) == 0
    _, name, colors = FAMILIES[family]
    dicts = DatasetCatalog.get(name)[:2]
    metadata = MetadataCatalog.get(name)
    for d in dicts:
        path = tmp_path / f"{name}_{str(d['image_id']).replace('/', '_')}.png"
        image = read_image(d["file_name"], format="RGB")
        expected = Visualizer(image, metadata).draw_dataset_dict(d).get_image()
        assert (read_rgb(path) == expected).all()
    assert len(list(tmp_path.glob("*.png"))) == 2


@pytest.mark.parametrize("family", FAMILIES)
def test_dataloader_pictures_show_mapped_labels(tool, datasets_root, monkeypatch, tmp_path, family):
    monkeypatch.setenv(DATASETS_ENV, str(datasets_root))
    # a fixed 48 px crop of the 64 px images: the mapped image, not the stored one, is drawn
    augment = ["INPUT.CROP.ENABLED", "True", "INPUT.CROP.SIZE", "[48, 48]"]
    augment += ["INPUT.RESIZE_TYPE", "choice", "INPUT.MIN_SIZE_TRAIN", "(64,)"]
    assert run(tool, family, "dataloader", tmp_path, *augment) == 0
    paths = sorted(tmp_path.glob("*.png"))
    assert [p.name for p in paths] == ["batch000_0.png", "batch000_1.png"]
    _, name, colors = FAMILIES[family]
    for path in paths:
        picture = read_rgb(path)
        assert picture.shape[0] >= 384  # 48 px upscaled x8, legends / notes around
        assert swatches(picture, getattr(MetadataCatalog.get(name), colors)) >= 1


def test_unknown_dataset_is_a_usage_error(tool, tmp_path, capsys):
    code = tool.main(
        ["--config-file", str(ROOT / "configs/quickstart/upernet_R18_synthetic.yaml"),
         "--source", "annotation", "--output", str(tmp_path), "DATASETS.TRAIN", '("nope",)']
    )  # fmt: skip
    assert code == 2
    assert "DATASETS.TRAIN datasets not registered: ['nope']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.main(["--config-file", "x.yaml", "--source", "elsewhere", "--output", str(tmp_path)])
