"""``PanopticDatasetMapper`` on hand-made panoptic images: geometry moves image, semantic map,
masks and boxes together; cropped-out instances vanish; padding is void."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from uper_parsing.config import get_cfg
from uper_parsing.data import (
    MAPPER_REGISTRY,
    MetadataCatalog,
    PadTo,
    PanopticDatasetMapper,
    RandomCropCategoryArea,
    ResizeShortestEdge,
    build_mapper,
    id2rgb,
)
from uper_parsing.tasks import configure_model

THINGS = ["person", "car", "dog"]
STUFF = ["sky", "road", "grass"]


def _seg(id_, category_id, isthing, iscrowd=0):
    return {"id": id_, "category_id": category_id, "isthing": isthing, "iscrowd": iscrowd}


@pytest.fixture
def metadata(fresh_name):
    return MetadataCatalog.get(fresh_name).set(
        thing_classes=THINGS,
        stuff_classes=STUFF,
        ignore_label=255,
        evaluator_type="coco_panoptic_seg",
    )


def _write(root: Path, stem: str, ids: np.ndarray, segments: list[dict], seed: int = 0) -> dict:
    """Write a random RGB image and the panoptic PNG of ``ids``; return the dataset dict."""
    image = np.random.default_rng(seed).integers(0, 256, (*ids.shape, 3), dtype=np.uint8)
    cv2.imwrite(str(root / f"{stem}.png"), image[..., ::-1])
    cv2.imwrite(str(root / f"{stem}_pan.png"), id2rgb(ids)[..., ::-1])
    return {
        "file_name": str(root / f"{stem}.png"),
        "image_id": stem,
        "height": ids.shape[0],
        "width": ids.shape[1],
        "pan_seg_file_name": str(root / f"{stem}_pan.png"),
        "segments_info": segments,
        "_image": image,
    }


def _semantic(ids: np.ndarray, segments: list[dict]) -> np.ndarray:
    """Independent oracle of the Panoptic FPN semantic map."""
    sem = np.full(ids.shape, 255, np.int64)
    for s in segments:
        sem[ids == s["id"]] = 0 if s["isthing"] else 1 + s["category_id"]
    return sem


def _box(mask: np.ndarray) -> list[float]:
    rows, cols = np.nonzero(mask)
    return [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]


def _check_types(inst: dict, hw: tuple[int, int]) -> int:
    n = len(inst["labels"])
    assert inst["boxes"].dtype == torch.float32 and inst["boxes"].shape == (n, 4)
    assert inst["labels"].dtype == torch.int64 and inst["labels"].shape == (n,)
    assert inst["masks"].dtype == torch.uint8 and inst["masks"].shape == (n, *hw)
    return n


# 20 x 30 image: void rows 0-1, things 1001 (cat 0) and 1002 (cat 2), crowd thing 1003, stuff.
FLIP_SEGMENTS = [
    _seg(1004, 1, 0),
    _seg(1001, 0, 1),
    _seg(1003, 1, 1, iscrowd=1),
    _seg(1002, 2, 1),
    _seg(1005, 0, 0),
]


def _flip_ids() -> np.ndarray:
    ids = np.full((20, 30), 1004, np.int64)
    ids[:2] = 0
    ids[2:7, 3:10] = 1001  # box [3, 2, 10, 7]
    ids[10:15, 20:28] = 1002  # box [20, 10, 28, 15]
    ids[11, 19] = 1002  # one more pixel: box [19, 10, 28, 15]
    ids[15:19, 0:6] = 1003
    ids[19] = 1005
    return ids


def test_registered():
    assert MAPPER_REGISTRY.get("panoptic") is PanopticDatasetMapper


def test_flip_moves_masks_boxes_and_semantic(tmp_path, metadata):
    ids = _flip_ids()
    d = _write(tmp_path, "flip", ids, FLIP_SEGMENTS)
    mapper = PanopticDatasetMapper(
        True, augmentations=[v2.RandomHorizontalFlip(1.0)], metadata=metadata
    )
    out = mapper(d)
    assert "_panoptic_segment_index" not in out
    assert torch.equal(out["image"], torch.from_numpy(d["_image"][:, ::-1].copy()).permute(2, 0, 1))
    assert out["sem_seg"].dtype == torch.uint8  # one byte a pixel to the GPU
    assert np.array_equal(out["sem_seg"].numpy(), _semantic(ids, FLIP_SEGMENTS)[:, ::-1])
    assert out["sem_seg"][16, 29] == 0  # the crowd thing stays "things"
    inst = out["instances"]
    assert _check_types(inst, (20, 30)) == 2  # the crowd segment is no instance
    assert inst["labels"].tolist() == [0, 2]
    # x1' = W - x2, x2' = W - x1
    assert inst["boxes"].tolist() == [[20, 2, 27, 7], [2, 10, 11, 15]]
    for mask, sid in zip(inst["masks"].numpy(), (1001, 1002)):
        assert np.array_equal(mask, (ids == sid)[:, ::-1].astype(np.uint8))
    assert (out["height"], out["width"]) == (20, 30)


# 20 x 40 image, resized x2 to 40 x 80, cropped to 40 x 40 (random left in 0..40), padded to
# 48 x 48. Thing A (id 1) in resized cols 0..7, thing B (id 2) in cols 72..79: any crop keeps at
# most one of them; the crowd thing (id 4, cols 30..41) is in every crop but is no instance.
def _crop_case() -> tuple[np.ndarray, list[dict]]:
    stuff = np.random.default_rng(5).integers(0, 3, 40)  # per column: makes the crop findable
    stuff[:3] = [0, 1, 2]
    ids = np.repeat(2000 + stuff[None], 20, axis=0)
    ids[4:10, 0:4] = 1
    ids[12:18, 36:40] = 2
    ids[14:17, 15:21] = 4
    ids[18:20, 22:26] = 0
    segments = [_seg(1, 0, 1), _seg(2, 1, 1), _seg(4, 0, 1, iscrowd=1)]
    segments += [_seg(2000 + s, s, 0) for s in range(3)]
    return ids, segments


def test_resize_crop_pad(tmp_path, metadata):
    ids, segments = _crop_case()
    d = _write(tmp_path, "crop", ids, segments)
    augs = [
        ResizeShortestEdge(short_edge_length=40),
        RandomCropCategoryArea(size=(48, 40)),
        PadTo(size=(48, 48)),
    ]
    mapper = PanopticDatasetMapper(True, augmentations=augs, metadata=metadata)
    resized = np.repeat(np.repeat(ids, 2, axis=0), 2, axis=1)  # nearest x2
    resized_sem = _semantic(resized, segments)
    seen = set()
    for seed in range(60):
        torch.manual_seed(seed)
        out = mapper(d)
        sem = out["sem_seg"].numpy()
        assert sem.shape == (48, 48) and out["image"].shape == (3, 48, 48)
        assert (sem[40:] == 255).all() and (sem[:, 40:] == 255).all()  # padding
        assert (out["image"][:, 40:] == 0).all() and (out["image"][:, :, 40:] == 0).all()
        lefts = [x for x in range(41) if np.array_equal(resized_sem[:, x : x + 40], sem[:40, :40])]
        assert len(lefts) == 1
        left = lefts[0]
        crop = np.zeros((48, 48), np.int64)
        crop[:40, :40] = resized[:, left : left + 40]
        inst = out["instances"]
        n = _check_types(inst, (48, 48))
        kept = [(sid, label) for sid, label in ((1, 0), (2, 1)) if (crop == sid).any()]
        assert inst["labels"].tolist() == [label for _, label in kept]
        assert n == len(kept) <= 1
        for k, (sid, _) in enumerate(kept):
            assert np.array_equal(inst["masks"][k].numpy(), (crop == sid).astype(np.uint8))
            assert inst["boxes"][k].tolist() == _box(crop == sid)
        if kept and kept[0][0] == 1:  # A: resized cols 0..7, rows 8..19
            assert inst["boxes"][0].tolist() == [0, 8, 8 - left, 20]
        if kept and kept[0][0] == 2:  # B: resized cols 72..79, rows 24..35
            assert inst["boxes"][0].tolist() == [72 - left, 24, min(80 - left, 40), 36]
        assert inst["masks"][:, 40:].sum() == 0 and inst["masks"][:, :, 40:].sum() == 0
        assert (sem[:40, :40][crop[:40, :40] == 4] == 0).all()  # crowd: "things", no instance
        seen.add(kept[0][0] if kept else None)
        if seen == {1, 2, None}:
            break
    assert seen == {1, 2, None}  # A kept, B kept, every instance cropped out (N = 0)


def test_more_than_255_segments_survive_padding(tmp_path, metadata):
    # 300 things of 2 x 2 pixels, ids 1..300 (255 and 256 included), padded from 30x40 to 36x48.
    k = np.arange(300).reshape(15, 20)
    ids = np.kron(k + 1, np.ones((2, 2), np.int64))
    segments = [_seg(i + 1, i % 3, 1) for i in range(300)]
    d = _write(tmp_path, "many", ids, segments)
    mapper = PanopticDatasetMapper(True, augmentations=[PadTo(size=(36, 48))], metadata=metadata)
    out = mapper(d)
    sem, inst = out["sem_seg"].numpy(), out["instances"]
    assert _check_types(inst, (36, 48)) == 300
    assert (sem[:30, :40] == 0).all() and (sem[30:] == 255).all() and (sem[:, 40:] == 255).all()
    masks = inst["masks"].numpy()
    coverage = masks.sum(axis=0)
    assert (coverage[:30, :40] == 1).all() and coverage[30:].sum() == 0
    assert coverage[:, 40:].sum() == 0
    assert inst["labels"].tolist() == [i % 3 for i in range(300)]
    rows, cols = np.divmod(np.arange(300), 20)
    expected = np.stack([2 * cols, 2 * rows, 2 * cols + 2, 2 * rows + 2], axis=1)
    assert np.array_equal(inst["boxes"].numpy(), expected.astype(np.float32))
    assert masks[254].sum() == 4 and masks[254][2 * 12 : 2 * 12 + 2, 2 * 14 : 2 * 14 + 2].all()


def test_category_area_crop_looks_at_sem_seg(tmp_path, metadata):
    # stuff "sky" in cols 0..29, "road" in cols 30..39: the limit rejects single-class crops.
    ids = np.full((10, 40), 1, np.int64)
    ids[:, 30:] = 2
    d = _write(tmp_path, "area", ids, [_seg(1, 0, 0), _seg(2, 1, 0)])
    crop = RandomCropCategoryArea(size=(10, 20), single_category_max_area=0.75, max_tries=50)
    mapper = PanopticDatasetMapper(True, augmentations=[crop], metadata=metadata)
    for seed in range(8):
        torch.manual_seed(seed)
        out = mapper(d)
        assert set(out["sem_seg"].unique().tolist()) == {1, 2}
        assert _check_types(out["instances"], (10, 20)) == 0


def test_test_mode_reads_image_only(tmp_path):
    d = _write(tmp_path, "test", _flip_ids(), FLIP_SEGMENTS)
    d["pan_seg_file_name"] = str(tmp_path / "absent.png")  # not read at test time
    out = PanopticDatasetMapper(False, augmentations=None)(d)
    assert out["image"].shape == (3, 20, 30) and out["image"].dtype == torch.uint8
    assert (out["height"], out["width"]) == (20, 30)
    assert "sem_seg" not in out and "instances" not in out


def test_from_config_checks_class_counts(tmp_path, metadata):
    ids = _flip_ids()
    d = _write(tmp_path, "cfg", ids, FLIP_SEGMENTS)
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = (metadata.name,)
    cfg.INPUT.DATASET_MAPPER_NAME = "panoptic"
    cfg.INPUT.RESIZE_SCALE = [60, 40]
    cfg.INPUT.CROP.SIZE = [32, 32]
    cfg.INPUT.COLOR_AUG_SSD = False
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(THINGS)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = len(STUFF)
    # the task record checks the model's class counts once, at set-up (not the mapper)
    with pytest.raises(ValueError, match="set MODEL.SEM_SEG_HEAD.NUM_CLASSES 4"):
        configure_model(cfg)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = len(STUFF) + 1
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 80
    with pytest.raises(ValueError, match="set MODEL.ROI_HEADS.NUM_CLASSES 3"):
        configure_model(cfg)
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = len(THINGS)
    torch.manual_seed(0)
    out = build_mapper(cfg, is_train=True)(d)
    assert out["sem_seg"].shape == (32, 32) and out["image"].shape == (3, 32, 32)
    n = _check_types(out["instances"], (32, 32))
    masks, boxes = out["instances"]["masks"].numpy(), out["instances"]["boxes"].numpy()
    for k in range(n):
        assert boxes[k].tolist() == _box(masks[k])
        assert (out["sem_seg"].numpy()[masks[k] == 1] == 0).all()
