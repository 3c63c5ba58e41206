import copy

import cv2
import numpy as np
import pytest
import torch
from _data_helpers import assert_aligned, block_label, image_from_label, write_pair

from uper_parsing.config import get_cfg
from uper_parsing.data import (
    MAPPER_REGISTRY,
    DatasetCatalog,
    MetadataCatalog,
    SemSegDatasetMapper,
    build_mapper,
    register_sem_seg,
)
from uper_parsing.data.mappers.base import LabelMapsMapper

CLASSES = ["c0", "c1", "c2", "c3"]


@pytest.fixture
def aligned_dataset(tmp_path, fresh_name):
    """Images coloured by their own labels (stored ADE-style: 0 = unlabelled, class i as i + 1)."""
    for i, hw in enumerate([(60, 80), (90, 50)]):
        train_ids = block_label(hw, 10, len(CLASSES), seed=i)
        train_ids[:10, :10] = 255  # an unlabelled corner
        stored = np.where(train_ids == 255, 0, train_ids + 1).astype(np.uint8)
        write_pair(tmp_path, f"im{i}", image_from_label(train_ids), stored, ".png")
    register_sem_seg(
        fresh_name,
        image_root=tmp_path / "images",
        label_root=tmp_path / "labels",
        metadata={"stuff_classes": CLASSES, "reduce_zero_label": True},
        image_ext=".png",
    )
    return fresh_name


def _cfg(name):
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = (name,)
    cfg.DATASETS.TEST = (name,)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = len(MetadataCatalog.get(name).stuff_classes)
    cfg.INPUT.RESIZE_SCALE = [160, 80]
    cfg.INPUT.CROP.SIZE = [64, 64]
    cfg.INPUT.COLOR_AUG_SSD = False
    cfg.INPUT.MIN_SIZE_TEST = 96
    cfg.INPUT.MAX_SIZE_TEST = 0
    return cfg


def test_registry_and_types(aligned_dataset):
    assert MAPPER_REGISTRY.get("sem_seg") is SemSegDatasetMapper
    cfg = _cfg(aligned_dataset)
    cfg.INPUT.COLOR_AUG_SSD = True
    mapper = build_mapper(cfg, is_train=True)
    d = DatasetCatalog.get(aligned_dataset)[0]
    original = copy.deepcopy(d)
    out = mapper(d)
    assert d == original  # the input dict is not modified
    assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, 64, 64)
    assert type(out["image"]) is torch.Tensor and type(out["sem_seg"]) is torch.Tensor
    assert out["sem_seg"].dtype == torch.uint8 and out["sem_seg"].shape == (64, 64)
    assert (out["height"], out["width"]) == (60, 80)
    assert out["file_name"] == d["file_name"] and out["image_id"] == "im0"
    assert set(out["sem_seg"].unique().tolist()) <= {0, 1, 2, 3, 255}


@pytest.mark.parametrize("seed", range(6))
def test_train_output_stays_aligned(aligned_dataset, seed):
    torch.manual_seed(seed)
    mapper = SemSegDatasetMapper(_cfg(aligned_dataset), is_train=True)
    for d in DatasetCatalog.get(aligned_dataset):
        out = mapper(d)
        image = out["image"].permute(1, 2, 0).numpy()
        label = out["sem_seg"].numpy()
        assert assert_aligned(image, label) > 200
        # ignore pixels (padding, the black corner) are black away from labelled pixels
        ignore = cv2.erode((label == 255).astype(np.uint8), np.ones((5, 5), np.uint8))
        assert (image[ignore.astype(bool)] <= 6).all()


def test_test_mode_resizes_image_only(aligned_dataset):
    mapper = build_mapper(_cfg(aligned_dataset), is_train=False)
    d = DatasetCatalog.get(aligned_dataset)[1]
    out = mapper(d)
    assert "sem_seg" not in out and out["sem_seg_file_name"] == d["sem_seg_file_name"]
    assert out["image"].shape == (3, 173, 96)  # short side 50 -> 96
    assert (out["height"], out["width"]) == (90, 50)


def test_bgr_format(aligned_dataset):
    cfg = _cfg(aligned_dataset)
    cfg.INPUT.MIN_SIZE_TEST = 0
    d = DatasetCatalog.get(aligned_dataset)[0]
    rgb = build_mapper(cfg, is_train=False)(d)["image"]
    cfg.INPUT.FORMAT = "BGR"
    bgr = build_mapper(cfg, is_train=False)(d)["image"]
    torch.testing.assert_close(bgr, rgb.flip(0))


def test_label_size_mismatch_is_reported(aligned_dataset):
    d = DatasetCatalog.get(aligned_dataset)[0]
    cv2.imwrite(d["sem_seg_file_name"], np.ones((59, 80), np.uint8))
    mapper = build_mapper(_cfg(aligned_dataset), is_train=True)
    with pytest.raises(ValueError, match="im0.png"):
        mapper(d)


def test_training_mapper_needs_metadata():
    with pytest.raises(ValueError, match="metadata"):
        SemSegDatasetMapper(is_train=True, augmentations=None, metadata=None)


def test_class_count_mismatch_with_the_model_is_a_clear_error():
    from uper_parsing.config import get_cfg
    from uper_parsing.tasks import configure_model

    cfg = get_cfg()
    cfg.DATASETS.TRAIN = ("synthetic_scenes_sem_seg_train",)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 150
    with pytest.raises(ValueError, match=r"NUM_CLASSES is 150 .* has 10 classes"):
        configure_model(cfg)  # the task record's check at set-up (the mapper reads no model keys)


class _ConstantLabels(LabelMapsMapper):
    """A mapper whose one label map is ``value`` everywhere."""

    def __init__(self, value: int, ignore_label: int) -> None:
        super().__init__(
            True, augmentations=None, metadata={"ignore_label": ignore_label}, check_labels=False
        )
        self.value = value

    def read_labels(self, d, hw):
        return {"sem_seg": np.full(hw, self.value, np.int64)}


def test_label_maps_leave_the_mapper_narrow(tmp_path):
    """One byte a pixel to the GPU where the ignore label fits in a byte, int32 otherwise; a
    value that does not fit is an error naming the file, never a silent wrap-around."""
    image = tmp_path / "im.png"
    cv2.imwrite(str(image), np.zeros((5, 7, 3), np.uint8))
    d = {"file_name": str(image)}
    out = _ConstantLabels(254, ignore_label=255)(d)["sem_seg"]
    assert out.dtype == torch.uint8 and out.shape == (5, 7) and int(out[0, 0]) == 254
    out = _ConstantLabels(426, ignore_label=65535)(d)["sem_seg"]
    assert out.dtype == torch.int32 and int(out[0, 0]) == 426
    with pytest.raises(ValueError, match=r"im.png: label map 'sem_seg' holds values 300\.\.300"):
        _ConstantLabels(300, ignore_label=255)(d)
