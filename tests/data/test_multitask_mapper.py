"""MultiTaskDatasetMapper: object / part / material maps move together under augmentation."""

import numpy as np
import pytest
import torch
from _multitask_helpers import prepare_tiny_multitask

from uper_parsing.config import get_cfg
from uper_parsing.data import (
    MAPPER_REGISTRY,
    DatasetCatalog,
    MetadataCatalog,
    MultiTaskDatasetMapper,
    read_multitask_label,
)
from uper_parsing.data.datasets import DATASETS_ENV


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mt_mapper")
    prepare_tiny_multitask(root)
    return root


@pytest.fixture
def names(tiny_root, monkeypatch):
    monkeypatch.setenv(DATASETS_ENV, str(tiny_root))
    return prepare_tiny_multitask(tiny_root)


def _cfg(train, val=None):
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = (train,)
    cfg.DATASETS.TEST = (val or train,)
    cfg.INPUT.DATASET_MAPPER_NAME = "multitask"
    cfg.INPUT.RESIZE_SCALE = [160, 80]
    cfg.INPUT.RATIO_RANGE = [0.5, 2.0]
    cfg.INPUT.CROP.SIZE = [56, 56]
    cfg.INPUT.MIN_SIZE_TEST = 96
    return cfg


def _triples(obj, part, mat):
    return set(zip(obj.ravel().tolist(), part.ravel().tolist(), mat.ravel().tolist()))


def test_maps_stay_aligned(names):
    _, val = names
    md = MetadataCatalog.get(val)
    mapper = MAPPER_REGISTRY.get("multitask")(_cfg(val), True)
    assert isinstance(mapper, MultiTaskDatasetMapper)
    crops = [t for t in mapper.augmentations.transforms if hasattr(t, "primary")]
    assert [t.primary for t in crops] == ["object"]  # category-area limit on the object map
    torch.manual_seed(0)
    checked = 0
    for d in [x for x in DatasetCatalog.get(val) if x["source"] == "scenes"] * 3:
        out = mapper(d)
        assert out["tasks"] == ["object", "part", "material", "scene"] and out["source"] == "scenes"
        obj, part, mat = (out[k] for k in ("object", "part", "material"))
        assert obj.dtype == torch.uint8 and obj.shape == part.shape == mat.shape == (56, 56)
        assert out["image"].shape == (3, 56, 56) and out["scene"] == d["scene"]
        o = read_multitask_label(d["object_file_name"], md, "object")
        p = read_multitask_label(d["part_file_name"], md, "part", objects=o)
        m = read_multitask_label(d["material_file_name"], md, "material")
        # nearest-neighbour geometry copies pixels: every (object, part, material) triple after
        # augmentation exists before it (padding adds all-ignore pixels)
        before = _triples(o, p, m) | {(255, 255, 255)}
        assert _triples(obj.numpy(), part.numpy(), mat.numpy()) <= before
        labelled = part != 255
        assert (obj[labelled] != 255).all()
        for k in obj[labelled].unique().tolist():  # part ids belong to the pixel's object
            ids = part[labelled & (obj == k)].unique().tolist()
            assert set(ids) <= set(md.object_parts[k])
        checked += int(labelled.sum())
    assert checked > 0


def test_material_only_and_texture_samples(names):
    train, _ = names
    mapper = MultiTaskDatasetMapper(_cfg(train), True)
    dicts = DatasetCatalog.get(train)
    material = mapper(next(d for d in dicts if d["source"] == "materials"))
    assert material["tasks"] == ["material"] and "object" not in material and "part" not in material
    assert material["material"].shape == (56, 56)
    torch.manual_seed(1)
    texture_dict = next(d for d in dicts if d["source"] == "textures")
    for _ in range(4):
        out = mapper(texture_dict)
        assert out["image"].shape == (3, 56, 56) and out["texture"] == texture_dict["texture"]
        assert not {"object", "part", "material"} & set(out)
        assert (out["height"], out["width"]) == (64, 64)


def test_texture_crop_pads_with_zeros_only(names):
    train, _ = names
    cfg = _cfg(train)
    cfg.INPUT.RATIO_RANGE = [0.1, 0.1]  # 64 px crop -> 8 px: mostly padding
    cfg.INPUT.COLOR_AUG_SSD = False
    mapper = MultiTaskDatasetMapper(cfg, True)
    out = mapper(next(d for d in DatasetCatalog.get(train) if d["source"] == "textures"))
    image = out["image"]
    assert image.shape == (3, 56, 56)
    assert (image[:, 8:, :] == 0).all() and (image[:, :, 8:] == 0).all()
    assert image[:, :8, :8].float().mean() > 0


def test_test_mode_resizes_image_only(names):
    _, val = names
    mapper = MultiTaskDatasetMapper(_cfg(val), False)
    d = DatasetCatalog.get(val)[0]
    out = mapper(d)
    assert out["image"].shape == (3, 96, 96) and (out["height"], out["width"]) == (64, 64)
    assert not {"object", "part", "material"} & set(out)
    assert out["object_file_name"] == d["object_file_name"] and out["scene"] == d["scene"]
    assert np.array_equal(d["tasks"], out["tasks"])
