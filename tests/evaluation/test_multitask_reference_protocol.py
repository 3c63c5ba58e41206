"""MultiTaskEvaluator: CSAIL's reference protocol (``<task>``) beside ours (``<task>_ours``) on
one-row cases worked out by hand in each test."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

import uper_parsing.data
from uper_parsing.data import Metadata, multitask_metadata
from uper_parsing.evaluation import MultiTaskEvaluator

X = 255  # ignore label
WALL, CHAIR, TABLE = 0, 1, 2
CHAIR_DASH, SEAT, CHAIR_LEG = 0, 1, 2  # global part ids; each object's "-" part comes first
TABLE_DASH, TOP, TABLE_LEG, DRAWER = 3, 4, 5, 6
PARTS = [(1, "seat"), (2, "leg"), (3, "top"), (4, "drawer")]  # (label number, name)
META = Metadata("fake").set(
    **multitask_metadata(
        classes={"object": [(1, "wall"), (2, "chair"), (3, "table")], "part": PARTS},
        part_hierarchy=[
            *(("chair", "seat"), ("chair", "leg")),
            *(("table", "top"), ("table", "leg"), ("table", "drawer")),
        ],
        sources=[{"name": "fake", "tasks": ["object", "part"], "size": 5}],
        ignore_label=X,
    )
)
assert META.object_parts == [[], [0, 1, 2], [3, 4, 5, 6]]
assert META.part_classes[CHAIR_DASH] == "chair/-" and META.part_classes[DRAWER] == "table/drawer"


class _Catalog:
    @staticmethod
    def get(name: str) -> SimpleNamespace:
        return META if name == "fake" else STALE_META


def _read_npy(file_name, metadata, task, expected_hw=None, *, objects=None) -> np.ndarray:
    """Stands in for read_multitask_label: the stored train ids (global part ids for parts)."""
    assert task != "part" or objects is not None
    labels = np.load(file_name)
    assert labels.shape == tuple(expected_hw)
    return labels


def part_scores(parts, override: dict[int, list[float]] | None = None) -> np.ndarray:
    """(7, 1, W) part scores whose argmax is ``parts``; ``override[col]`` replaces a column."""
    scores = np.moveaxis(np.eye(7, dtype=np.float32)[np.asarray([parts])], -1, 0)
    for col, column in (override or {}).items():
        scores[:, 0, col] = column
    return scores


@pytest.fixture
def evaluate(tmp_path, monkeypatch):
    """``evaluate([(gt, output), ...])``: ``gt`` maps "object" / "part" to one row of train ids
    (its keys are the image's tasks), ``output`` holds the predicted object row and part scores.
    """
    monkeypatch.setattr(uper_parsing.data, "MetadataCatalog", _Catalog, raising=False)
    monkeypatch.setattr(uper_parsing.data, "read_multitask_label", _read_npy, raising=False)

    def run(images: list[tuple[dict, dict]]) -> dict:
        evaluator = MultiTaskEvaluator("fake", distributed=False)
        for index, (gt, output) in enumerate(images):
            input_dict = {"file_name": f"{index}.jpg", "tasks": list(gt)}
            for task, row in gt.items():
                path = tmp_path / f"{index}_{task}.npy"
                np.save(path, np.asarray([row], dtype=np.int64))
                input_dict[f"{task}_file_name"] = str(path)
            objects = np.eye(3, dtype=np.float32)[np.asarray([output["object"]])]
            scores = {"object": np.moveaxis(objects, -1, 0), "part": output["part"]}
            evaluator.process([input_dict], [{k: torch.from_numpy(v) for k, v in scores.items()}])
        return evaluator.evaluate()

    return run


def test_valid_part_gating(evaluate):
    """Image 1 has the chair with "-" pixels only: not valid for the chair, so CSAIL's protocol
    skips it (counted, its seats predicted on "-" would make seat 1/3). Image 2 is perfect:
    seat 1/1, leg 1/1, pAcc 1/1. Ours ignores the "-" pixels but counts image 1's leg predicted
    on the wall (a "not chair" pixel): leg TP 1, gt 1, pred 2 -> 1/2; seat 1; pAcc 2/2."""
    image1 = (
        {"object": [CHAIR, CHAIR, WALL, WALL], "part": [CHAIR_DASH, CHAIR_DASH, X, X]},
        {"object": [CHAIR, CHAIR, CHAIR, WALL], "part": part_scores([SEAT, SEAT, CHAIR_LEG, 0])},
    )
    image2 = (
        {"object": [CHAIR, CHAIR, WALL, WALL], "part": [SEAT, CHAIR_LEG, X, X]},
        {"object": [CHAIR, CHAIR, WALL, WALL], "part": part_scores([SEAT, CHAIR_LEG, 0, 0])},
    )
    results = evaluate([image1, image2])
    assert results["part"] == pytest.approx(
        {"mIoU": 100.0, "pAcc": 100.0, "mIoU-chair": 100.0, "pAcc-chair": 100.0}
    )
    assert results["part_ours"] == pytest.approx(
        {"mIoU": 75.0, "pAcc": 100.0, "mIoU-chair": 75.0, "pAcc-chair": 100.0}
    )
    # image 1 alone has no real-part ground truth: no part metrics under either protocol
    assert set(evaluate([image1])) == {"object", "object_ours"}


def test_parts_taken_inside_the_predicted_object(evaluate):
    """Seven pixels, [pred, gt] in chair-local parts (0 = "-" or outside the chair):
    0: (seat, seat) TP.  1: (leg, leg) TP.  2: predicted leg on a gt "-" pixel: (leg, 0), a false
    positive.  3: gt seat, predicted object wall (its part argmax seat is not read): (0, seat), a
    miss.  4: predicted chair / seat on gt wall: (seat, 0).  5: wall on both sides: nothing.
    6: gt leg, predicted chair whose "-" score (0.6) beats leg (0.3): (0, leg), a miss.
    Reference: seat inter 1, pred 2 (0, 4), gt 2 (0, 3) -> 1/3; leg inter 1, pred 2 (1, 2),
    gt 2 (1, 6) -> 1/3; pAcc 2/4.
    Ours: pixel 2 is ignored ("-" ground truth) and pixel 6 takes the argmax over the real parts
    only (leg): seat TP 1, gt 2, pred 2 -> 1/3; leg TP 2, gt 2, pred 2 -> 1; pAcc 3/4."""
    gt = {
        "object": [CHAIR, CHAIR, CHAIR, CHAIR, WALL, WALL, CHAIR],
        "part": [SEAT, CHAIR_LEG, CHAIR_DASH, SEAT, X, X, CHAIR_LEG],
    }
    scores = part_scores(
        [SEAT, CHAIR_LEG, CHAIR_LEG, SEAT, SEAT, CHAIR_LEG, CHAIR_DASH],
        override={6: [0.6, 0.1, 0.3, 0, 0, 0, 0]},
    )
    output = {"object": [CHAIR, CHAIR, CHAIR, WALL, CHAIR, WALL, CHAIR], "part": scores}
    results = evaluate([(gt, output)])
    assert results["part"] == pytest.approx(
        {"mIoU": 100 / 3, "pAcc": 50.0, "mIoU-chair": 100 / 3, "pAcc-chair": 50.0}
    )
    ours = 100 * (1 / 3 + 1) / 2
    assert results["part_ours"] == pytest.approx(
        {"mIoU": ours, "pAcc": 75.0, "mIoU-chair": ours, "pAcc-chair": 75.0}
    )


def test_part_miou_over_real_parts_with_empty_union_scoring_zero(evaluate):
    """Table: gt ["-", "-", top, leg], predicted table everywhere with parts ["-", "-", top, top].
    Reference: top inter 1, pred 2, gt 1 -> 1/2; leg inter 0, union 1 -> 0; drawer empty
    union -> 0; "-" (2/2) is no real part: mIoU (1/2 + 0 + 0) / 3 = 1/6 (not 1/4 without the
    drawer, nor 3/8 with "-"); pAcc 1/2. Ours: the "-" pixels are ignored, so top TP 1, gt 1,
    pred 2 -> 1/2, leg 0/1, drawer absent on both sides and left out: mIoU (1/2 + 0) / 2,
    pAcc 1/2. The chair is valid nowhere and in no ground truth: in neither average."""
    gt = {"object": [TABLE] * 4, "part": [TABLE_DASH, TABLE_DASH, TOP, TABLE_LEG]}
    output = {"object": [TABLE] * 4, "part": part_scores([TABLE_DASH, TABLE_DASH, TOP, TOP])}
    results = evaluate([(gt, output)])
    assert results["part"] == pytest.approx(
        {"mIoU": 100 / 6, "pAcc": 50.0, "mIoU-table": 100 / 6, "pAcc-table": 50.0}
    )
    assert results["part_ours"] == pytest.approx(
        {"mIoU": 25.0, "pAcc": 50.0, "mIoU-table": 25.0, "pAcc-table": 50.0}
    )


def test_object_miou_over_all_classes_and_unlabelled_pixels_not_counted(evaluate):
    """gt [wall, wall, chair, unlabelled], pred [wall, chair, chair, chair]. The chair predicted
    on the unlabelled pixel is not counted: wall 1/2, chair inter 1, pred 2, gt 1 -> 1/2 (1/3 if
    it were); table is in neither map. Reference: table scores 0, mIoU (1/2 + 1/2 + 0) / 3.
    Ours: table left out, mIoU 1/2. pAcc 2/3 in both."""
    gt = {"object": [WALL, WALL, CHAIR, X]}
    output = {"object": [WALL, CHAIR, CHAIR, CHAIR], "part": part_scores([0] * 4)}
    results = evaluate([(gt, output)])
    common = {"pAcc": 200 / 3, "IoU-wall": 50.0, "IoU-chair": 50.0}
    assert results == {
        "object": pytest.approx({"mIoU": 100 / 3, **common, "IoU-table": 0.0}),
        "object_ours": pytest.approx({"mIoU": 50.0, **common}),
    }


STALE_META = SimpleNamespace(**{**META.as_dict(), "object_parts": [[], [1, 2], [4, 5, 6]]})


def test_metadata_without_dash_parts_is_refused(monkeypatch):
    monkeypatch.setattr(uper_parsing.data, "MetadataCatalog", _Catalog, raising=False)
    with pytest.raises(ValueError, match=r"object_parts\[1\] starts with part 1 'chair/seat'"):
        MultiTaskEvaluator("stale", distributed=False)


def test_through_the_label_reader(tmp_path, monkeypatch):
    """Label PNGs (label numbers) through read_multitask_label: the chair's unlabelled part (0)
    and its "top" (a table part) read as "chair/-"; the wall has no parts. Predicted chair
    everywhere with parts [seat, leg, leg, seat]. Reference: (seat, seat), (leg, "-") twice,
    (seat, outside) -> seat 1/2, leg 0/2: mIoU 1/4, pAcc 1/1. Ours: the "-" pixels are ignored,
    (seat, not chair) is a false positive -> seat 1/2, leg absent: mIoU 1/2, pAcc 1/1."""
    monkeypatch.setattr(uper_parsing.data, "MetadataCatalog", _Catalog, raising=False)
    input_dict = {"file_name": "a.jpg", "tasks": ["object", "part"]}
    for task, numbers in (("object", [2, 2, 2, 1]), ("part", [1, 0, 3, 0])):
        path = str(tmp_path / f"a_{task}.png")
        cv2.imwrite(path, np.asarray([numbers], dtype=np.uint8))
        input_dict[f"{task}_file_name"] = path
    objects = np.moveaxis(np.eye(3, dtype=np.float32)[[[CHAIR] * 4]], -1, 0)
    output = {"object": objects, "part": part_scores([SEAT, CHAIR_LEG, CHAIR_LEG, SEAT])}
    evaluator = MultiTaskEvaluator("fake", distributed=False)
    evaluator.process([input_dict], [{k: torch.from_numpy(v) for k, v in output.items()}])
    results = evaluator.evaluate()
    assert results["part"] == pytest.approx(
        {"mIoU": 25.0, "pAcc": 100.0, "mIoU-chair": 25.0, "pAcc-chair": 100.0}
    )
    assert results["part_ours"] == pytest.approx(
        {"mIoU": 50.0, "pAcc": 100.0, "mIoU-chair": 50.0, "pAcc-chair": 100.0}
    )
