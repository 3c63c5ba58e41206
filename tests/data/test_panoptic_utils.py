"""Panoptic label readers on hand-made PNGs with hand-computed expectations."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from uper_parsing.data import MetadataCatalog
from uper_parsing.data.panoptic_utils import (
    check_segments_info,
    id2rgb,
    panoptic_instances,
    panoptic_semantic,
    read_panoptic,
    read_panoptic_semantic,
    rgb2id,
    segment_index_map,
)


def _seg(id_, category_id, isthing, iscrowd=0):
    return {"id": id_, "category_id": category_id, "isthing": isthing, "iscrowd": iscrowd}


def _write_png(path: Path, ids: np.ndarray) -> str:
    """Write ``ids`` as a COCO panoptic PNG (RGB on disk; cv2 writes BGR)."""
    cv2.imwrite(str(path), id2rgb(ids)[..., ::-1])
    return str(path)


@pytest.fixture
def metadata(fresh_name):
    return MetadataCatalog.get(fresh_name).set(
        thing_classes=["person", "car", "dog"],
        stuff_classes=["sky", "road", "grass", "wall"],
        ignore_label=255,
    )


# ids of the hand-made 3 x 4 case: 1 = thing (cat 2), 2 = stuff (cat 0), 3 = crowd thing (cat 1),
# 4 = stuff (cat 3), 5003 = thing (cat 0, id > 255: G channel used), 0 = void.
IDS = np.array([[0, 1, 1, 2], [3, 3, 2, 2], [4, 4, 5003, 0]], dtype=np.int64)
SEGMENTS = [_seg(1, 2, 1), _seg(2, 0, 0), _seg(3, 1, 1, iscrowd=1), _seg(4, 3, 0), _seg(5003, 0, 1)]
SEMANTIC = np.array([[255, 0, 0, 1], [0, 0, 1, 1], [4, 4, 0, 255]], dtype=np.uint8)


def _dict(tmp_path: Path, ids=IDS, segments=SEGMENTS, **extra) -> dict:
    png = _write_png(tmp_path / "pan.png", ids)
    d = {"file_name": "im.jpg", "height": ids.shape[0], "width": ids.shape[1]}
    return {**d, "pan_seg_file_name": png, "segments_info": segments, **extra}


def test_rgb2id_id2rgb_round_trip():
    assert id2rgb(np.array([[1 + 2 * 256 + 3 * 65536]])).tolist() == [[[1, 2, 3]]]
    assert rgb2id(np.array([[[255, 0, 1]]], np.uint8)).tolist() == [[255 + 65536]]
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 256**3, (7, 9))
    ids[0, :4] = [0, 255, 256, 256**3 - 1]
    rgb = id2rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (7, 9, 3)
    back = rgb2id(rgb)
    assert back.dtype == np.int64 and np.array_equal(back, ids)
    with pytest.raises(ValueError, match="16777215"):
        id2rgb(np.array([[256**3]]))


def test_read_panoptic_reads_rgb(tmp_path):
    ids = read_panoptic(_dict(tmp_path))
    assert ids.dtype == np.int64 and np.array_equal(ids, IDS)  # 5003 = R 139, G 19: RGB order


def test_read_panoptic_missing_listed_segment(tmp_path):
    d = _dict(tmp_path, ids=np.where(IDS == 5003, 0, IDS))
    with pytest.raises(ValueError, match="segment id 5003 listed in segments_info is absent") as e:
        read_panoptic(d)
    assert d["pan_seg_file_name"] in str(e.value)


def test_read_panoptic_unlisted_png_id(tmp_path):
    d = _dict(tmp_path, ids=np.where(IDS == 0, 7, IDS))
    with pytest.raises(ValueError, match="segment id 7 of .* is not listed") as e:
        read_panoptic(d)
    assert d["pan_seg_file_name"] in str(e.value)


def test_read_panoptic_size_and_file_errors(tmp_path):
    d = _dict(tmp_path)
    with pytest.raises(ValueError, match=r"size \(H, W\) = \(3, 4\).*\(3, 5\)"):
        read_panoptic({**d, "width": 5})
    with pytest.raises(FileNotFoundError, match="nope.png"):
        read_panoptic({**d, "pan_seg_file_name": str(tmp_path / "nope.png")})
    with pytest.raises(ValueError, match="segment id 2 is listed twice"):
        read_panoptic({**d, "segments_info": [*SEGMENTS, _seg(2, 1, 0)]})


def test_panoptic_semantic_hand_made():
    sem = panoptic_semantic(IDS, SEGMENTS)
    assert sem.dtype == np.uint8 and np.array_equal(sem, SEMANTIC)  # crowd thing 3 -> 0
    unlisted = IDS.copy()
    unlisted[0, 0] = 9  # ids not in segments_info are ignored
    assert panoptic_semantic(unlisted, SEGMENTS, ignore_label=254)[0].tolist() == [254, 0, 0, 1]


def test_read_panoptic_semantic_derived_and_file(tmp_path, metadata):
    d = _dict(tmp_path)
    assert np.array_equal(read_panoptic_semantic(d, metadata), SEMANTIC)
    assert np.array_equal(read_panoptic_semantic(d, metadata, ids=IDS), SEMANTIC)
    stored = np.array([[255, 0, 4, 1], [0, 0, 1, 1], [3, 4, 0, 2]], np.uint8)
    cv2.imwrite(str(tmp_path / "sem.png"), stored)
    from_file = read_panoptic_semantic(
        {**d, "sem_seg_file_name": str(tmp_path / "sem.png")}, metadata
    )
    assert from_file.dtype == np.uint8 and np.array_equal(from_file, stored)


def test_read_panoptic_semantic_file_errors(tmp_path, metadata):
    d = _dict(tmp_path)
    bad = np.array([[255, 0, 5, 1], [0, 0, 1, 1], [3, 4, 0, 2]], np.uint8)  # 5 > K_st = 4
    cv2.imwrite(str(tmp_path / "bad.png"), bad)
    with pytest.raises(ValueError, match="invalid value 5") as e:
        read_panoptic_semantic({**d, "sem_seg_file_name": str(tmp_path / "bad.png")}, metadata)
    assert str(tmp_path / "bad.png") in str(e.value) and "1..4" in str(e.value)
    cv2.imwrite(str(tmp_path / "small.png"), bad[:2])
    with pytest.raises(ValueError, match=r"small.png has size \(H, W\) = \(2, 4\)"):
        read_panoptic_semantic({**d, "sem_seg_file_name": str(tmp_path / "small.png")}, metadata)


def test_check_segments_info_category_range(tmp_path, metadata):
    check_segments_info(_dict(tmp_path), metadata)
    bad_stuff = [*SEGMENTS[:3], _seg(4, 4, 0), SEGMENTS[4]]  # stuff id 4, only 4 stuff_classes
    with pytest.raises(ValueError, match=r"segment id 4 of .*pan.png has category_id 4.*0\.\.3"):
        read_panoptic_semantic(_dict(tmp_path, segments=bad_stuff), metadata)
    bad_thing = [*SEGMENTS[:4], _seg(5003, 3, 1)]
    with pytest.raises(ValueError, match=r"segment id 5003 .*category_id 3.*3 thing_classes"):
        check_segments_info(_dict(tmp_path, segments=bad_thing), metadata)


def test_panoptic_instances_hand_made():
    ids = np.zeros((6, 8), np.int64)
    ids[1:3, 2:5] = 10  # thing cat 1: box x 2..4, y 1..2 -> [2, 1, 5, 3]
    ids[0, 6] = 10
    ids[5, 7] = 20  # thing cat 0, one pixel -> [7, 5, 8, 6]
    ids[4, 0:3] = 30  # crowd thing: no instance
    ids[3, :] = 40  # stuff: no instance
    segments = [_seg(10, 1, 1), _seg(40, 2, 0), _seg(20, 0, 1), _seg(30, 2, 1, 1), _seg(50, 1, 1)]
    out = panoptic_instances(ids, segments)  # 50 is listed but absent: skipped
    assert out["boxes"].dtype == np.float32 and out["labels"].dtype == np.int64
    assert out["masks"].dtype == np.uint8 and out["masks"].shape == (2, 6, 8)
    # thing 10 also holds (0, 6): its box grows to x 2..6, y 0..2
    assert out["boxes"].tolist() == [[2, 0, 7, 3], [7, 5, 8, 6]]
    assert out["labels"].tolist() == [1, 0]
    assert np.array_equal(out["masks"][0], (ids == 10).astype(np.uint8))
    assert np.array_equal(out["masks"][1], (ids == 20).astype(np.uint8))


def test_panoptic_instances_none():
    out = panoptic_instances(np.zeros((4, 5), np.int64), [_seg(3, 0, 0), _seg(4, 0, 1, 1)])
    assert out["boxes"].shape == (0, 4) and out["boxes"].dtype == np.float32
    assert out["labels"].shape == (0,) and out["labels"].dtype == np.int64
    assert out["masks"].shape == (0, 4, 5) and out["masks"].dtype == np.uint8


def test_segment_index_map():
    index = segment_index_map(IDS, SEGMENTS)
    expected = [[0, 256, 256, 257], [258, 258, 257, 257], [259, 259, 260, 0]]
    assert index.dtype == np.int64 and index.tolist() == expected
