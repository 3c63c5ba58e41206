"""The shared evaluator pieces: the confusion-matrix helper against a pixel-by-pixel oracle, and
GatheringEvaluator's gather -> score -> log -> write sequence."""

from __future__ import annotations

import json
import logging
import pickle
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

import uper_parsing.data
from uper_parsing.evaluation import (
    GatheringEvaluator,
    MultiTaskEvaluator,
    SemSegEvaluator,
    argmax_labels,
    bincount_matrix,
    confusion_matrix,
    headline,
    metrics_table,
)
from uper_parsing.evaluation.coco_evaluation import COCOEvaluator
from uper_parsing.evaluation.panoptic_evaluation import COCOPanopticEvaluator
from uper_parsing.utils import comm

IGNORE = 255


def oracle_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """(K+1, K+1) [pred, gt] counted one pixel at a time, ignore pixels in the last column."""
    counts = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for p, g in zip(pred.reshape(-1).tolist(), gt.reshape(-1).tolist(), strict=True):
        counts[p, num_classes if g == IGNORE else g] += 1
    return counts


def test_confusion_matrix_matches_pixel_oracle_on_odd_sizes():
    rng = np.random.default_rng(3)
    for height, width in [(45, 45), (1, 7), (13, 2)]:
        gt = rng.integers(0, 5, (height, width))
        gt[rng.random((height, width)) < 0.2] = IGNORE
        pred = rng.integers(0, 5, (height, width))
        matrix = confusion_matrix(pred, gt, 5, IGNORE, "label.png")
        assert matrix.dtype == np.int64
        assert np.array_equal(matrix, oracle_matrix(pred, gt, 5))
        assert matrix.sum() == height * width


def test_confusion_matrix_names_file_and_value():
    gt = np.array([[0, 9], [IGNORE, 1]])
    with pytest.raises(ValueError, match=r"a/label\.png: ground-truth value 9 .* < 3 .* 255"):
        confusion_matrix(np.zeros((2, 2), np.int64), gt, 3, IGNORE, "a/label.png")
    with pytest.raises(ValueError, match="value -1"):
        confusion_matrix(np.zeros(1, np.int64), np.array([-1]), 3, IGNORE, "x")


def test_bincount_matrix_and_argmax_labels():
    pred, gt = np.array([0, 2, 2, 1]), np.array([0, 2, 1, 1])
    expected = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 1]])
    assert np.array_equal(bincount_matrix(pred, gt, 3), expected)
    scores = np.zeros((3, 2, 2), np.float32)
    scores[2, 0, 1] = scores[1, 1, 0] = 1.0
    assert argmax_labels(scores).tolist() == [[0, 2], [1, 0]]
    assert argmax_labels(torch.from_numpy(scores)).tolist() == [[0, 2], [1, 0]]
    assert argmax_labels(torch.from_numpy(scores)).dtype == np.int64


def test_headline_and_table_format():
    metrics = {"mIoU": 42.5, "IoU-wall": 50.0, "pACC": 80.0}
    assert headline(metrics) == "mIoU 42.50, pACC 80.00"
    lines = metrics_table(["IoU", "ACC"], [("a" * 30, [50.0, None]), ("b", [1.234, 2.0])])
    assert lines == [
        "class" + " " * 19 + "     IoU     ACC",
        "a" * 23 + " " + "   50.00       -",
        "b" + " " * 23 + "    1.23    2.00",
    ]


class CountingEvaluator(GatheringEvaluator):
    """A minimal evaluator: counts processed images; scores nothing when it saw none."""

    results_file = "counting.json"

    def __init__(self, dataset_name: str, **kwargs: Any) -> None:
        super().__init__(dataset_name, **kwargs)
        self.count = 0
        self.logged: list[dict] = []

    def reset(self) -> None:
        self.count = 0

    def process(self, inputs: list[dict], outputs: list[dict]) -> None:
        self.count += len(inputs)

    def local_state(self) -> int:
        return self.count

    def merge_states(self, states: list[int]) -> int:
        return sum(states)

    def score(self, state: int) -> dict[str, dict[str, float]]:
        return {"count": {"images": float(state)}} if state else {}

    def log_results(self, results: dict[str, dict[str, float]]) -> None:
        self.logged.append(results)


@pytest.fixture
def catalog(monkeypatch):
    metadata = {"d": SimpleNamespace(name="d")}
    monkeypatch.setattr(
        uper_parsing.data, "MetadataCatalog", SimpleNamespace(get=metadata.__getitem__)
    )


def test_gathering_evaluator_scores_logs_and_writes(catalog, tmp_path):
    evaluator = CountingEvaluator("d", output_dir=str(tmp_path / "out"), distributed=False)
    evaluator.process([{}, {}], [{}, {}])
    results = evaluator.evaluate()
    assert results == {"count": {"images": 2.0}}
    assert evaluator.logged == [results]
    assert json.loads((tmp_path / "out" / "counting.json").read_text()) == results


def test_gathering_evaluator_with_nothing_writes_nothing(catalog, tmp_path):
    evaluator = CountingEvaluator("d", output_dir=str(tmp_path / "out"), distributed=False)
    assert evaluator.evaluate() == {}
    assert evaluator.logged == []
    assert not (tmp_path / "out").exists()


def test_gathering_evaluator_gathers_on_the_main_process(catalog, monkeypatch):
    sent = []

    def send(data, dst=0):  # a non-main rank: its state goes to rank 0, it gets nothing back
        sent.append(pickle.dumps(data))
        return []

    monkeypatch.setattr(comm, "is_main_process", lambda: False)
    monkeypatch.setattr(comm, "gather", send)
    rank1 = CountingEvaluator("d")
    rank1.process([{}] * 3, [{}] * 3)
    assert rank1.evaluate() is None and rank1.logged == []

    monkeypatch.setattr(comm, "is_main_process", lambda: True)
    monkeypatch.setattr(comm, "gather", lambda data, dst=0: [data, pickle.loads(sent.pop())])
    rank0 = CountingEvaluator("d")
    rank0.process([{}], [{}])
    assert rank0.evaluate() == {"count": {"images": 4.0}}


def test_every_evaluator_shares_the_base():
    for cls in (SemSegEvaluator, COCOPanopticEvaluator, COCOEvaluator, MultiTaskEvaluator):
        assert issubclass(cls, GatheringEvaluator)
        assert cls.results_file.endswith("_evaluation.json")


def test_a_subclass_without_results_file_is_refused(catalog):
    class Nameless(CountingEvaluator):
        results_file = ""

    with pytest.raises(TypeError, match="Nameless must set the class attribute results_file"):
        Nameless("d")


def test_sem_seg_log_table(catalog, monkeypatch, caplog):
    metadata = {"d": SimpleNamespace(name="d", stuff_classes=["wall", "sky"], ignore_label=255)}
    monkeypatch.setattr(
        uper_parsing.data, "MetadataCatalog", SimpleNamespace(get=metadata.__getitem__)
    )
    evaluator = SemSegEvaluator("d", distributed=False, gt_reader=lambda x, hw: np.zeros(hw))
    scores = torch.zeros(2, 2, 2)
    scores[1, 0, 0] = 1.0  # one pixel predicted "sky", absent from the ground truth
    evaluator.process([{"file_name": "a.jpg"}], [{"sem_seg": scores}])
    with caplog.at_level(logging.INFO, logger="uper_parsing.evaluation.sem_seg_evaluation"):
        metrics = evaluator.evaluate()["sem_seg"]
    assert metrics["IoU-sky"] == 0.0 and metrics["IoU-wall"] == pytest.approx(75.0)
    text = caplog.text
    assert "Semantic segmentation on d: mIoU 37.50, fwIoU 75.00, mACC 75.00, pACC 75.00" in text
    assert "sky" + " " * 21 + "    0.00       -" in text  # no accuracy without ground truth
