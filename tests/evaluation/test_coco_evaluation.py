"""COCOEvaluator (box and mask AP via pycocotools) on the hand-made panoptic dataset of
``_panoptic_helpers``, with hand-computed expectations."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from _panoptic_helpers import ground_truth_outputs, make_dataset

from uper_parsing.data import read_panoptic
from uper_parsing.evaluation import COCOEvaluator
from uper_parsing.evaluation.coco_evaluation import panoptic_to_coco_annotations

HEADLINE = ("AP", "AP50", "AP75", "APs", "APm", "APl")
NAN = float("nan")


@pytest.fixture
def dataset(tmp_path):
    name = f"test_coco_eval_{tmp_path.name}"
    return name, make_dataset(tmp_path / "data", name)


def evaluate(name, inputs, outputs, **kwargs):
    evaluator = COCOEvaluator(name, **kwargs)
    evaluator.reset()
    evaluator.process(inputs, outputs)
    return evaluator.evaluate()


def instances(boxes, scores, labels, masks):
    return {
        "instances": {
            "boxes": torch.tensor(boxes, dtype=torch.float32),
            "scores": torch.tensor(scores),
            "labels": torch.tensor(labels),
            "masks": torch.from_numpy(np.stack(masks)),
        }
    }


def test_panoptic_labels_become_coco_annotations(dataset):
    _, dicts = dataset
    image_b = dicts[1]
    annotations = panoptic_to_coco_annotations(
        read_panoptic(image_b), image_b["segments_info"], {0: 1, 1: 3}
    )
    # Image "b": the car (rows 2-5, cols 0-3) and the crowd person (rows 2-5, cols 6-9).
    assert [(a["category_id"], a["iscrowd"], a["area"], a["bbox"]) for a in annotations] == [
        (3, 0, 16, [0.0, 2.0, 4.0, 4.0]),
        (1, 1, 16, [6.0, 2.0, 4.0, 4.0]),
    ]
    car = mask_util.decode(annotations[0]["segmentation"])
    assert car.shape == (6, 10) and car[2:6, 0:4].all() and car.sum() == 16


@pytest.mark.parametrize("distributed", [False, True])  # True: a world of one process
def test_ground_truth_as_prediction_is_100(dataset, tmp_path, distributed):
    name, dicts = dataset
    out = tmp_path / "out"
    results = evaluate(
        name, dicts, ground_truth_outputs(dicts, name), output_dir=str(out), distributed=distributed
    )
    assert list(results) == ["bbox", "segm"]
    for metrics in results.values():
        assert list(metrics) == [*HEADLINE, "AP-person", "AP-car"]
        # All objects are small (16 px < 32^2): no medium or large ground truth -> NaN.
        assert math.isnan(metrics["APm"]) and math.isnan(metrics["APl"])
        defined = {k: v for k, v in metrics.items() if k not in ("APm", "APl")}
        assert defined == pytest.approx(dict.fromkeys(defined, 100.0))
    saved = json.loads((out / "coco_instances_results.json").read_text())
    # Two non-crowd things (the person of "a", the car of "b"), dataset ids, XYWH boxes.
    assert [(p["image_id"], p["category_id"], p["bbox"]) for p in saved] == [
        (1, 1, [0.0, 2.0, 4.0, 4.0]),
        (2, 3, [0.0, 2.0, 4.0, 4.0]),
    ]


def test_detection_of_a_crowd_is_not_a_false_positive(dataset):
    name, dicts = dataset
    outputs = ground_truth_outputs(dicts, name)
    crowd = np.zeros((1, 6, 10), dtype=bool)
    crowd[0, 2:6, 6:10] = True  # the crowd person of image "b", detected with the top score
    extra = instances([[6, 2, 10, 6]], [2.0], [0], list(crowd))["instances"]
    outputs[1]["instances"] = {k: torch.cat([extra[k], outputs[1]["instances"][k]]) for k in extra}
    results = evaluate(name, dicts, outputs, distributed=False)
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert results["segm"]["AP-person"] == pytest.approx(100.0)


def _image_a_predictions():
    """Image "a" (GT person rows 2-5, cols 0-3: 16 px, box XYWH [0, 2, 4, 4]; no car)."""
    false_positive = np.zeros((8, 8), dtype=bool)
    false_positive[6:8, 0:4] = True  # on the grass
    true_positive = np.zeros((8, 8), dtype=bool)
    true_positive[2:6, 0:4] = True
    true_positive[5, 1:4] = False  # 13 of the 16 GT pixels: mask IoU 13 / 16 = 0.8125
    car = np.zeros((8, 8), dtype=bool)
    car[2:6, 4:8] = True
    return instances(
        boxes=[[0, 6, 4, 8], [0, 2, 4, 6.5], [4, 2, 8, 6]],  # TP box IoU 16 / 18 = 0.889
        scores=[0.9, 0.8, 0.95],
        labels=[0, 0, 1],
        masks=[false_positive, true_positive, car],
    )


def test_hand_computed_case(dataset):
    name, dicts = dataset
    results = evaluate(name, dicts[:1], [_image_a_predictions()], distributed=False)
    # Person detections by score: the false positive (0.9), then the match (0.8). At an IoU
    # threshold the match passes, precision is 0 then 1/2 at recall 1, so the interpolated
    # precision is 1/2 at every recall point: AP 0.5; at a threshold it fails, AP 0.
    # Box IoU 0.889 passes 0.50 ... 0.85 (8 of 10 thresholds): AP = 8 * 0.5 / 10 = 40.
    # Mask IoU 0.8125 passes 0.50 ... 0.80 (7 of 10): AP = 7 * 0.5 / 10 = 35.
    # The car has no ground truth in image "a": AP-car undefined (NaN), out of the mean.
    expected = {
        "bbox": {"AP": 40.0, "AP50": 50.0, "AP75": 50.0, "APs": 40.0},
        "segm": {"AP": 35.0, "AP50": 50.0, "AP75": 50.0, "APs": 35.0},
    }
    for task, values in expected.items():
        metrics = results[task]
        assert {k: metrics[k] for k in values} == pytest.approx(values)
        assert metrics["AP-person"] == pytest.approx(values["AP"])
        assert all(math.isnan(metrics[k]) for k in ("APm", "APl", "AP-car"))


def test_empty_predictions_give_ap_0(dataset, tmp_path, caplog):
    name, dicts = dataset
    out = tmp_path / "out"
    empty = [
        {
            "instances": {
                "boxes": torch.zeros(0, 4),
                "scores": torch.zeros(0),
                "labels": torch.zeros(0, dtype=torch.int64),
                "masks": torch.zeros(0, d["height"], d["width"], dtype=torch.bool),
            }
        }
        for d in dicts
    ]
    with caplog.at_level(logging.WARNING):
        results = evaluate(name, dicts, empty, output_dir=str(out), distributed=False)
    assert "no predictions" in caplog.text
    zeros = dict.fromkeys([*HEADLINE, "AP-person", "AP-car"], 0.0)
    assert results == {"bbox": zeros, "segm": zeros}
    assert json.loads((out / "coco_instances_results.json").read_text()) == []


def test_instances_json_is_the_ground_truth_when_given(tmp_path):
    """With ``instances_json`` in the metadata the panoptic labels are not used: this JSON adds a
    car on image "a" that no model output finds."""
    person = np.zeros((8, 8), dtype=np.uint8)
    person[2:6, 0:4] = 1
    car = np.zeros((8, 8), dtype=np.uint8)
    car[6:8, 4:8] = 1
    annotations = []
    for ann_id, (mask, category) in enumerate([(person, 1), (car, 3)], start=1):
        rle = mask_util.encode(np.asfortranarray(mask))
        rle["counts"] = rle["counts"].decode("ascii")
        annotations.append(
            {
                "id": ann_id,
                "image_id": 1,
                "category_id": category,
                "segmentation": rle,
                "area": float(mask.sum()),
                "bbox": [float(v) for v in mask_util.toBbox(rle)],
                "iscrowd": 0,
            }
        )
    instances_json = tmp_path / "instances.json"
    instances_json.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "height": 8, "width": 8, "file_name": "a.jpg"}],
                "annotations": annotations,
                "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
            }
        )
    )
    name = f"test_coco_eval_json_{tmp_path.name}"
    dicts = make_dataset(tmp_path / "data", name, instances_json=str(instances_json))
    outputs = ground_truth_outputs(dicts, name)[:1]  # the person only
    results = evaluate(name, dicts[:1], outputs, distributed=False)
    for task in ("bbox", "segm"):  # person found (AP 100), car missed (AP 0): mean 50
        assert results[task]["AP"] == pytest.approx(50.0)
        assert results[task]["AP-person"] == pytest.approx(100.0)
        assert results[task]["AP-car"] == pytest.approx(0.0)


def test_box_only_task_and_missing_masks(dataset):
    name, dicts = dataset
    outputs = ground_truth_outputs(dicts, name)
    for output in outputs:
        del output["instances"]["masks"]
    results = evaluate(name, dicts, outputs, tasks=("bbox",), distributed=False)
    assert list(results) == ["bbox"] and results["bbox"]["AP"] == pytest.approx(100.0)
    with pytest.raises(KeyError, match="a.jpg.*no 'masks'"):
        evaluate(name, dicts, outputs, distributed=False)
    with pytest.raises(ValueError, match="subset of"):
        COCOEvaluator(name, tasks=("keypoints",))
