"""The instance-priority merge of Panoptic FPN on hand-made cases."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from uper_parsing.modeling.postprocessing import (
    combine_semantic_and_instance_outputs,
    detector_postprocess,
)


def _instances(scores, labels, masks):
    return {
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": torch.stack(masks) if masks else torch.zeros(0, 4, 8, dtype=torch.bool),
    }


def _mask(rows, cols, hw=(4, 8)):
    m = torch.zeros(hw, dtype=torch.bool)
    m[rows[0] : rows[1], cols[0] : cols[1]] = True
    return m


def _merge(instances, semantic, **kwargs):
    defaults = {"overlap_threshold": 0.5, "stuff_area_thresh": 0, "instances_score_thresh": 0.5}
    return combine_semantic_and_instance_outputs(instances, semantic, **{**defaults, **kwargs})


def test_overlapping_instances_by_score():
    # a (0.9): columns 0-3 (16 px). b (0.8): columns 1-4, 12 of its 16 px taken by a -> 75% >
    # 50%: skipped. c (0.7): columns 3-6, 4 of 16 px taken (25%) -> keeps its 12 free pixels.
    a, b, c = _mask((0, 4), (0, 4)), _mask((0, 4), (1, 5)), _mask((0, 4), (3, 7))
    inst = _instances([0.7, 0.9, 0.8], [2, 0, 1], [c, a, b])
    semantic = torch.zeros(4, 8, dtype=torch.int64)
    seg, info = _merge(inst, semantic)
    assert [s["instance_id"] for s in info] == [1, 0]  # a first, then c; b skipped
    assert info[0] == {
        "id": 1,
        "isthing": True,
        "category_id": 0,
        "area": 16,
        "score": 0.8999999761581421,
        "instance_id": 1,
    }
    assert info[1]["id"] == 2 and info[1]["category_id"] == 2 and info[1]["area"] == 12
    expected = torch.zeros(4, 8, dtype=torch.int32)
    expected[:, 0:4] = 1
    expected[:, 4:7] = 2
    assert torch.equal(seg, expected)  # column 7: semantic "things" only -> void


def test_low_scores_are_not_merged_and_stuff_fills_the_rest():
    inst = _instances([0.49], [3], [_mask((0, 2), (0, 2))])
    semantic = torch.tensor([[2] * 8, [2] * 8, [0] * 8, [1] * 8])  # stuff 1, things, stuff 0
    seg, info = _merge(inst, semantic)
    assert [(s["isthing"], s["category_id"], s["area"]) for s in info] == [
        (False, 0, 8),  # semantic label 1 -> stuff id 0
        (False, 1, 16),  # semantic label 2 -> stuff id 1, including the dropped instance's pixels
    ]
    assert seg[2].eq(0).all() and seg[3].eq(1).all() and seg[:2].eq(2).all()


def test_small_stuff_regions_are_dropped():
    semantic = torch.zeros(4, 8, dtype=torch.int64)
    semantic[0, :3] = 1  # 3 px of stuff 0: below the limit
    semantic[1:, :] = 2  # 24 px of stuff 1, 6 of them under an instance
    inst = _instances([0.95], [4], [_mask((2, 4), (0, 3))])
    seg, info = _merge(inst, semantic, stuff_area_thresh=4)
    assert [(s["id"], s["isthing"], s["category_id"], s["area"]) for s in info] == [
        (1, True, 4, 6),
        (2, False, 1, 18),
    ]
    assert seg[0].eq(0).all()  # small stuff and "things" pixels without an instance: void
    assert int((seg == 2).sum()) == 18


def test_empty_predictions():
    seg, info = _merge(_instances([], [], []), torch.zeros(4, 8, dtype=torch.int64))
    assert info == [] and seg.dtype == torch.int32 and seg.eq(0).all()
    semantic = torch.full((4, 8), 3)
    seg, info = _merge(_instances([], [], []), semantic)
    assert info == [{"id": 1, "isthing": False, "category_id": 2, "area": 32}]
    assert seg.eq(1).all()


def test_fully_covered_instance_is_skipped_even_with_a_permissive_threshold():
    a = _mask((0, 4), (0, 4))
    inst = _instances([0.9, 0.8], [0, 1], [a, a.clone()])
    _, info = _merge(inst, torch.zeros(4, 8, dtype=torch.int64), overlap_threshold=1.0)
    assert [s["instance_id"] for s in info] == [0]


def test_detector_postprocess_scales_boxes_and_pastes_masks():
    det = {
        "boxes": torch.tensor([[10.0, 20.0, 30.0, 40.0], [0.0, 0.0, 60.0, 50.0]]),
        "scores": torch.tensor([0.9, 0.5]),
        "labels": torch.tensor([1, 0]),
        "masks": torch.ones(2, 1, 28, 28),
    }
    # network input 50 x 60 (h, w) -> output 100 x 90: x scaled by 1.5, y by 2
    out = detector_postprocess(det, (50, 60), 100, 90)
    assert torch.allclose(out["boxes"][0], torch.tensor([15.0, 40.0, 45.0, 80.0]))
    assert torch.allclose(out["boxes"][1], torch.tensor([0.0, 0.0, 90.0, 100.0]))
    assert out["masks"].shape == (2, 100, 90) and out["masks"].dtype == torch.bool
    # an all-ones mask fills the pixels whose centre lies in its box, except corner pixels,
    # whose centres are within half a mask cell of two edges (0.64 x 0.66 < 0.5 for box 1)
    expected = torch.zeros(2, 100, 90, dtype=torch.bool)
    expected[0, 40:80, 15:45] = True
    expected[1] = True
    expected[1, [0, 0, -1, -1], [0, -1, 0, -1]] = False
    assert torch.equal(out["masks"], expected)
    empty = {k: v[:0] for k, v in det.items()}
    assert detector_postprocess(empty, (50, 60), 100, 90)["masks"].shape == (0, 100, 90)


def _merge_one_by_one(instances, semantic, overlap, stuff_area, score_thresh):
    """The merge as detectron2's ``combine_semantic_and_instance_outputs`` writes it: one instance
    at a time, reading each decision on the host (plus our skip of instances with nothing free)."""
    seg = torch.zeros(semantic.shape, dtype=torch.int32)
    info = []
    for index in torch.argsort(instances["scores"], descending=True).tolist():
        score = float(instances["scores"][index])
        if score < score_thresh:
            break
        mask = instances["masks"][index]
        area = int(mask.sum())
        if area == 0:
            continue
        free = mask & (seg == 0)
        free_area = int(free.sum())
        if free_area == 0 or (area - free_area) / area > overlap:
            continue
        seg[free] = len(info) + 1
        label = int(instances["labels"][index])
        info.append({"id": len(info) + 1, "isthing": True, "area": free_area, "score": score,
                     "category_id": label, "instance_id": index})  # fmt: skip
    for label in torch.unique(semantic).tolist():
        region = (semantic == label) & (seg == 0)
        area = int(region.sum())
        if label <= 0 or area < stuff_area:
            continue
        seg[region] = len(info) + 1
        info.append({"id": len(info) + 1, "isthing": False, "category_id": label - 1, "area": area})
    return seg, info


@settings(max_examples=80)
@given(
    seed=st.integers(0, 2**31 - 1),
    count=st.integers(0, 12),
    overlap=st.sampled_from([0.0, 0.3, 0.5, 1.0]),
    stuff_area=st.sampled_from([0, 3, 20]),
    score_thresh=st.sampled_from([0.0, 0.5]),
)
def test_equals_the_merge_one_instance_at_a_time(seed, count, overlap, stuff_area, score_thresh):
    """Random overlapping boxes and blobs, equal scores included, and a semantic map of a few
    labels: the same segment map and segments as the sequential merge."""
    g = torch.Generator().manual_seed(seed)
    masks = []
    for _ in range(count):
        if torch.rand((), generator=g) < 0.2:
            masks.append(torch.rand(12, 16, generator=g) < 0.3)  # a scattered blob
        else:
            y, x = torch.randint(0, 10, (2,), generator=g).tolist()
            h, w = torch.randint(0, 9, (2,), generator=g).tolist()  # empty masks too
            masks.append(_mask((y, y + h), (x, x + w), hw=(12, 16)))
    scores = (torch.randint(0, 6, (count,), generator=g) / 5).tolist()  # ties, 0 and 1 included
    labels = torch.randint(0, 5, (count,), generator=g).tolist()
    inst = _instances(scores, labels, masks)
    if not masks:
        inst["masks"] = torch.zeros(0, 12, 16, dtype=torch.bool)
    semantic = torch.randint(0, 4, (12, 16), generator=g)
    args = {"overlap_threshold": overlap, "stuff_area_thresh": stuff_area}
    seg, info = _merge(inst, semantic, instances_score_thresh=score_thresh, **args)
    expected_seg, expected_info = _merge_one_by_one(
        inst, semantic, overlap, stuff_area, score_thresh
    )
    assert info == expected_info
    assert torch.equal(seg, expected_seg)
