"""COCOPanopticEvaluator (PQ via panopticapi) and the "coco_panoptic_seg" composite evaluator.

The dataset is the hand-made one of ``_panoptic_helpers`` (two images, person / car things, sky /
grass stuff); expected numbers are computed by hand and checked against ``pq_compute``.
"""

from __future__ import annotations

import json
import logging
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _panoptic_helpers import CATEGORIES, ground_truth_outputs, make_dataset, one_hot
from panopticapi.evaluation import PQStat, pq_compute
from PIL import Image

from uper_parsing.data import MetadataCatalog, rgb2id
from uper_parsing.evaluation import (
    COCOPanopticEvaluator,
    PanopticFPNEvaluator,
    SemSegEvaluator,
    build_evaluator,
    pq_metrics,
)
from uper_parsing.evaluation.panoptic_evaluation import pq_stat_of_matches, stdout_to_debug_log
from uper_parsing.utils import comm

CLASSES = ("person", "car", "sky", "grass")
HEADLINE = [f"{m}{s}" for s in ("", "_th", "_st") for m in ("PQ", "SQ", "RQ")]
PER_CLASS = [f"{m}-{c}" for c in CLASSES for m in ("PQ", "SQ", "RQ")]


@pytest.fixture
def dataset(tmp_path):
    """(name, dataset dicts) of the hand-made dataset, registered under a fresh name."""
    name = f"test_panoptic_eval_{tmp_path.name}"
    return name, make_dataset(tmp_path / "data", name)


def evaluate(name, inputs, outputs, **kwargs):
    evaluator = COCOPanopticEvaluator(name, **kwargs)
    evaluator.reset()
    evaluator.process(inputs, outputs)
    return evaluator.evaluate()


@pytest.mark.parametrize("distributed", [False, True])  # True: a world of one process
def test_ground_truth_as_prediction_is_100(dataset, tmp_path, distributed):
    name, dicts = dataset
    out = tmp_path / "out"
    results = evaluate(
        name, dicts, ground_truth_outputs(dicts, name), output_dir=str(out), distributed=distributed
    )
    assert list(results) == ["panoptic_seg"]
    metrics = results["panoptic_seg"]
    assert list(metrics) == HEADLINE + PER_CLASS
    assert metrics == pytest.approx(dict.fromkeys(HEADLINE + PER_CLASS, 100.0))
    assert json.loads((out / "panoptic_evaluation.json").read_text()) == results
    # The PNGs keep the model's segment ids; the JSON carries dataset category ids.
    png = np.asarray(Image.open(out / "panoptic_predictions" / "a.png"))
    np.testing.assert_array_equal(
        rgb2id(png), np.asarray(ground_truth_outputs(dicts, name)[0]["panoptic_seg"][0])
    )
    predictions = json.loads((out / "panoptic_predictions.json").read_text())["annotations"]
    assert [a["file_name"] for a in predictions] == ["a.png", "b.png"]
    assert {s["id"]: s["category_id"] for s in predictions[0]["segments_info"]} == {
        5: 7,
        300: 1,
        70000: 9,
    }


# Image "a" only (8 x 8; GT: sky rows 0-1, person rows 2-5 cols 0-3, void rows 2-5 cols 4-7,
# grass rows 6-7). Predicted segments (model ids, contiguous category ids):
PRED_A = np.zeros((8, 8), dtype=np.int32)
PRED_A[0:2] = 1  # sky: exactly the GT sky -> TP, IoU 1
PRED_A[2:6, 0:3] = 2  # person, 12 of the 16 GT pixels -> IoU 12 / 16 = 0.75 > 0.5: TP
PRED_A[2:6, 4:8] = 3  # car on GT void (16 / 16 > 1/2 void) -> ignored, not a false positive
PRED_A[6:8] = 4  # car on the grass: car false positive; the grass is missed: grass FN
SEGMENTS_A = [
    {"id": 1, "isthing": False, "category_id": 0},
    {"id": 2, "isthing": True, "category_id": 0},
    {"id": 3, "isthing": True, "category_id": 1},
    {"id": 4, "isthing": True, "category_id": 1},
    {"id": 9, "isthing": False, "category_id": 1},  # no pixels: dropped
]
# Per class (PQ = sum IoU / (TP + FP/2 + FN/2), SQ = sum IoU / TP, RQ = TP / (TP + FP/2 + FN/2)):
#   person: TP 1, IoU 0.75 -> PQ 0.75, SQ 0.75, RQ 1;   car: FP 1 -> 0, 0, 0
#   sky:    TP 1, IoU 1    -> PQ 1,    SQ 1,    RQ 1;   grass: FN 1 -> 0, 0, 0
# All = mean of the four, things = mean(person, car), stuff = mean(sky, grass):
EXPECTED_A = {
    "PQ": 100 * (0.75 + 0 + 1 + 0) / 4,  # 43.75
    "SQ": 100 * (0.75 + 0 + 1 + 0) / 4,  # 43.75
    "RQ": 100 * (1 + 0 + 1 + 0) / 4,  # 50
    "PQ_th": 100 * (0.75 + 0) / 2,  # 37.5
    "SQ_th": 100 * (0.75 + 0) / 2,
    "RQ_th": 100 * (1 + 0) / 2,  # 50
    "PQ_st": 100 * (1 + 0) / 2,  # 50
    "SQ_st": 100 * (1 + 0) / 2,
    "RQ_st": 100 * (1 + 0) / 2,
    **{"PQ-person": 75.0, "SQ-person": 75.0, "RQ-person": 100.0},
    **{"PQ-car": 0.0, "SQ-car": 0.0, "RQ-car": 0.0},
    **{"PQ-sky": 100.0, "SQ-sky": 100.0, "RQ-sky": 100.0},
    **{"PQ-grass": 0.0, "SQ-grass": 0.0, "RQ-grass": 0.0},
}


def test_hand_computed_case_matches_pq_compute(dataset, tmp_path, caplog):
    name, dicts = dataset
    out = tmp_path / "out"
    outputs = [{"panoptic_seg": (torch.from_numpy(PRED_A), SEGMENTS_A)}]
    with caplog.at_level(logging.WARNING):
        metrics = evaluate(name, dicts[:1], outputs, output_dir=str(out), distributed=False)
    assert "1 of the 2 annotated images were predicted" in caplog.text
    assert metrics["panoptic_seg"] == pytest.approx(EXPECTED_A, abs=1e-9)
    assert list(metrics["panoptic_seg"]) == list(EXPECTED_A)

    # The ground truth written for panopticapi is restricted to the evaluated image.
    gt = json.loads((out / "panoptic_gt.json").read_text())
    assert [a["image_id"] for a in gt["annotations"]] == [1]
    assert [i["id"] for i in gt["images"]] == [1]
    # The oracle: panopticapi's own pq_compute over the files the evaluator wrote.
    oracle = pq_compute(
        str(out / "panoptic_gt.json"),
        str(out / "panoptic_predictions.json"),
        gt_folder=MetadataCatalog.get(name).panoptic_root,
        pred_folder=str(out / "panoptic_predictions"),
    )
    assert metrics["panoptic_seg"]["PQ"] == pytest.approx(100 * oracle["All"]["pq"])
    assert metrics["panoptic_seg"]["RQ_th"] == pytest.approx(100 * oracle["Things"]["rq"])
    assert metrics["panoptic_seg"]["SQ_st"] == pytest.approx(100 * oracle["Stuff"]["sq"])
    assert metrics["panoptic_seg"]["PQ-person"] == pytest.approx(100 * oracle["per_class"][1]["pq"])


def test_images_with_one_stem_in_two_folders_keep_their_own_predictions(dataset):
    name, dicts = dataset
    outputs = ground_truth_outputs(dicts, name)
    inputs = [dict(d, file_name=f"{folder}/frame.jpg") for d, folder in zip(dicts, "xy")]
    metrics = evaluate(name, inputs, outputs, distributed=False)["panoptic_seg"]
    assert metrics == pytest.approx(dict.fromkeys(HEADLINE + PER_CLASS, 100.0))


def test_empty_predictions_give_pq_0(dataset):
    name, dicts = dataset
    outputs = [
        {"panoptic_seg": (torch.zeros(d["height"], d["width"], dtype=torch.int32), [])}
        for d in dicts
    ]
    metrics = evaluate(name, dicts, outputs, distributed=False)["panoptic_seg"]
    # Every ground-truth segment is a false negative (the crowd person is ignored, yet the
    # non-crowd person of image "a" makes person count): all classes 0.
    assert metrics == dict.fromkeys(HEADLINE + PER_CLASS, 0.0)


def test_no_images_gives_empty_results(dataset, caplog):
    name, _ = dataset
    with caplog.at_level(logging.WARNING):
        assert COCOPanopticEvaluator(name, distributed=False).evaluate() == {}
    assert "no predictions" in caplog.text


def test_bad_predictions_raise_with_the_image(dataset):
    name, dicts = dataset
    evaluator = COCOPanopticEvaluator(name, distributed=False)
    unlisted = [{"panoptic_seg": (torch.from_numpy(PRED_A), SEGMENTS_A[:3])}]  # id 4 not listed
    with pytest.raises(ValueError, match="a.jpg.*segment id 4"):
        evaluator.process(dicts[:1], unlisted)
    bad_category = [dict(s) for s in SEGMENTS_A]
    bad_category[0]["category_id"] = 2  # only 2 stuff classes
    with pytest.raises(ValueError, match="a.jpg.*category_id 2"):
        evaluator.process(dicts[:1], [{"panoptic_seg": (torch.from_numpy(PRED_A), bad_category)}])


def test_pq_metrics_leaves_out_groups_without_segments():
    categories = {c["id"]: c for c in CATEGORIES}
    stat = PQStat()
    stat[1].tp, stat[1].iou = 2, 1.6  # two person matches, IoU 0.8 each
    stat[1].fn = 1
    # person: PQ = 1.6 / (2 + 0.5) = 0.64, SQ = 0.8, RQ = 2 / 2.5 = 0.8; no stuff segment at all.
    expected = {"PQ": 64.0, "SQ": 80.0, "RQ": 80.0, "PQ_th": 64.0, "SQ_th": 80.0, "RQ_th": 80.0}
    expected |= {"PQ-person": 64.0, "SQ-person": 80.0, "RQ-person": 80.0}
    assert pq_metrics(stat, categories) == pytest.approx(expected)


# ------------------------------------------------------------------------------------------------
# The composite registered for "coco_panoptic_seg", and the semantic part
# ------------------------------------------------------------------------------------------------
def test_composite_is_built_from_the_registry(dataset, tmp_path):
    name, dicts = dataset
    out = tmp_path / "out"
    evaluator = build_evaluator(SimpleNamespace(OUTPUT_DIR=str(tmp_path)), name, str(out))
    assert isinstance(evaluator, PanopticFPNEvaluator)
    evaluator.reset()
    evaluator.process(dicts, ground_truth_outputs(dicts, name))
    results = evaluator.evaluate()
    assert list(results) == ["panoptic_seg", "bbox", "segm", "sem_seg"]
    assert results["panoptic_seg"]["PQ"] == pytest.approx(100.0)
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert results["segm"]["AP"] == pytest.approx(100.0)
    assert results["sem_seg"]["mIoU"] == pytest.approx(100.0)
    assert set(results["sem_seg"]) >= {"IoU-things", "IoU-sky", "IoU-grass"}
    for file in (
        "panoptic_evaluation.json",
        "coco_instances_results.json",
        "sem_seg_evaluation.json",
    ):
        assert (out / file).is_file()


def test_semantic_part_hand_computed(dataset):
    name, dicts = dataset
    # Image "a" predicted "things" everywhere. Labelled GT pixels: sky 16, things 16, grass 16
    # (the 16 void pixels are left out). things: TP 16, union 48 -> IoU 1/3; sky, grass: IoU 0.
    outputs = [{"sem_seg": one_hot(np.zeros((8, 8), dtype=np.int64), 3)}]
    evaluator = PanopticFPNEvaluator(name, distributed=False)
    semantic = list(evaluator)[2]
    assert isinstance(semantic, SemSegEvaluator)
    semantic.process(dicts[:1], outputs)
    metrics = semantic.evaluate()["sem_seg"]
    assert metrics["mIoU"] == pytest.approx(100 * (1 / 3) / 3)
    assert metrics["pACC"] == pytest.approx(100 / 3)
    assert metrics["IoU-things"] == pytest.approx(100 / 3)
    assert metrics["IoU-sky"] == metrics["IoU-grass"] == 0.0


def test_sem_seg_evaluator_class_names_and_reader(dataset):
    name, dicts = dataset
    gt = np.array([[0, 1], [2, 255]])
    reader_calls = []

    def reader(input_dict, hw):
        reader_calls.append((input_dict["file_name"], hw))
        return gt

    evaluator = SemSegEvaluator(
        name, class_names=["x", "y", "z"], gt_reader=reader, distributed=False
    )
    evaluator.process(
        [{"file_name": "img.jpg"}], [{"sem_seg": one_hot(np.array([[0, 1], [1, 0]]), 3)}]
    )
    metrics = evaluator.evaluate()["sem_seg"]
    # x: TP 1 (IoU 1), y: TP 1 + FP 1 (IoU 1/2), z: missed (IoU 0); the 255 pixel is ignored.
    assert metrics["mIoU"] == pytest.approx(100 * (1 + 0.5 + 0) / 3)
    assert reader_calls == [("img.jpg", (2, 2))]
    with pytest.raises(ValueError, match="num_classes=4 and 3 class_names"):
        SemSegEvaluator(name, class_names=["x", "y", "z"], num_classes=4)


def test_two_ranks_gather_like_one(dataset, monkeypatch):
    """Rank 1 evaluates image "b", rank 0 image "a"; what rank 0 gathers (through a pickle round
    trip, as (all_)gather does) scores exactly like one process that saw both images."""
    name, dicts = dataset
    outputs = ground_truth_outputs(dicts, name)
    outputs[0]["panoptic_seg"] = (torch.from_numpy(PRED_A), SEGMENTS_A)  # not all 100
    single = PanopticFPNEvaluator(name, distributed=False)
    single.process(dicts, outputs)
    expected = single.evaluate()

    sent = []  # what rank 1 contributes to each (all_)gather, in call order

    def send(data, dst=0):
        sent.append(pickle.dumps(data))
        return [data]

    def receive(data, dst=0):
        return [data, pickle.loads(sent.pop(0))]

    monkeypatch.setattr(comm, "is_main_process", lambda: False)
    monkeypatch.setattr(comm, "all_gather", send)
    monkeypatch.setattr(comm, "gather", send)
    rank1 = PanopticFPNEvaluator(name, distributed=True)
    rank1.process(dicts[1:], outputs[1:])
    assert rank1.evaluate() == {}  # DatasetEvaluators skips the None of non-main ranks
    assert all(e.evaluate() is None for e in rank1)

    monkeypatch.setattr(comm, "is_main_process", lambda: True)
    monkeypatch.setattr(comm, "all_gather", receive)
    monkeypatch.setattr(comm, "gather", receive)
    rank0 = PanopticFPNEvaluator(name, distributed=True)
    rank0.process(dicts[:1], outputs[:1])
    gathered = rank0.evaluate()
    assert list(gathered) == list(expected)
    for task, metrics in expected.items():
        assert gathered[task] == pytest.approx(metrics, nan_ok=True)
    assert expected["panoptic_seg"]["PQ"] < 100.0


def test_pq_stat_pool_equals_one_process_and_prints_nothing(dataset, tmp_path, capfd):
    name, dicts = dataset
    out = tmp_path / "out"
    outputs = ground_truth_outputs(dicts, name)
    outputs[0] = {"panoptic_seg": (torch.from_numpy(PRED_A), SEGMENTS_A)}  # not all 100
    evaluate(name, dicts, outputs, output_dir=str(out), distributed=False)
    capfd.readouterr()
    gt = json.loads((out / "panoptic_gt.json").read_text())
    pred = json.loads((out / "panoptic_predictions.json").read_text())
    matched = list(zip(gt["annotations"], pred["annotations"], strict=True))
    categories = {c["id"]: c for c in gt["categories"]}
    args = (matched, MetadataCatalog.get(name).panoptic_root, str(out / "panoptic_predictions"))
    with stdout_to_debug_log(logging.getLogger("test")):
        one = pq_stat_of_matches(*args, categories, max_workers=1)
        two = pq_stat_of_matches(*args, categories, max_workers=2)  # a forked pool of 2
    assert capfd.readouterr().out == ""  # the workers' progress prints stay captured
    for group in (None, True, False):
        assert two.pq_average(categories, isthing=group) == one.pq_average(
            categories, isthing=group
        )
    assert one.pq_average(categories, isthing=None)[0]["pq"] < 1.0
