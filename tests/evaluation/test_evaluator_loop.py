"""DatasetEvaluators, inference_on_dataset, print_csv_format, build_evaluator."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import uper_parsing.data
from uper_parsing.evaluation import (
    EVALUATOR_REGISTRY,
    DatasetEvaluator,
    DatasetEvaluators,
    SemSegEvaluator,
    build_evaluator,
    inference_on_dataset,
    print_csv_format,
)


class FixedEvaluator(DatasetEvaluator):
    """Counts what it is shown and reports a fixed result."""

    def __init__(self, result):
        self.result = result
        self.seen = 0
        self.resets = 0

    def reset(self):
        self.resets += 1
        self.seen = 0

    def process(self, inputs, outputs):
        assert len(inputs) == len(outputs)
        self.seen += len(inputs)

    def evaluate(self):
        return self.result


class RecordingModel(nn.Module):
    """Returns (K, H, W) scores; records the mode it was called in."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 1)
        self.calls = []

    def forward(self, inputs):
        self.calls.append((self.training, torch.is_inference_mode_enabled()))
        return [{"sem_seg": self.conv(torch.zeros(1, 1, 4, 4))[0]} for _ in inputs]


def batches(num_batches: int, batch_size: int = 1):
    return [[{"image_id": f"{b}_{i}"} for i in range(batch_size)] for b in range(num_batches)]


def test_evaluators_merge_and_reject_duplicate_tasks():
    first = FixedEvaluator({"sem_seg": {"mIoU": 1.0}})
    second = FixedEvaluator({"panoptic_seg": {"PQ": 2.0}})
    both = DatasetEvaluators([first, second])
    both.reset()
    both.process([{}, {}], [{}, {}])
    assert first.seen == second.seen == 2
    assert both.evaluate() == {"sem_seg": {"mIoU": 1.0}, "panoptic_seg": {"PQ": 2.0}}

    clash = DatasetEvaluators([first, FixedEvaluator({"sem_seg": {"mIoU": 3.0}})])
    with pytest.raises(KeyError, match="sem_seg"):
        clash.evaluate()


def test_evaluators_skip_none_results():
    both = DatasetEvaluators([FixedEvaluator(None), FixedEvaluator({"a": {"x": 1.0}})])
    assert both.evaluate() == {"a": {"x": 1.0}}


@pytest.mark.parametrize("was_training", [True, False])
def test_inference_restores_mode_and_runs_in_inference_mode(was_training):
    model = RecordingModel().train(was_training)
    evaluator = FixedEvaluator({"sem_seg": {"mIoU": 50.0}})
    results = inference_on_dataset(model, batches(8, batch_size=2), evaluator)
    assert results == {"sem_seg": {"mIoU": 50.0}}
    assert model.training is was_training
    assert model.calls == [(False, True)] * 8
    assert evaluator.resets == 1 and evaluator.seen == 16


def test_inference_restores_mode_when_the_model_raises():
    class Failing(RecordingModel):
        def forward(self, inputs):
            raise RuntimeError("boom")

    model = Failing().train()
    with pytest.raises(RuntimeError, match="boom"):
        inference_on_dataset(model, batches(2), FixedEvaluator({}))
    assert model.training


def test_inference_non_main_rank_returns_empty_dict():
    # Evaluators return None away from the main process; the loop turns that into {}.
    assert inference_on_dataset(RecordingModel(), batches(3), FixedEvaluator(None)) == {}


def test_inference_accepts_lists_none_and_iterators(caplog):
    model = RecordingModel()
    evaluators = [FixedEvaluator({"a": {"x": 1.0}}), FixedEvaluator({"b": {"y": 2.0}})]
    assert inference_on_dataset(model, batches(2), evaluators) == {"a": {"x": 1.0}, "b": {"y": 2.0}}
    with caplog.at_level(logging.INFO, logger="uper_parsing.evaluation.evaluator"):
        assert inference_on_dataset(model, iter(batches(7)), None) == {}
    text = caplog.text
    assert "Total inference time" in text and "5 warm-up iterations" in text
    assert "pure compute time" in text


def test_print_csv_format(caplog):
    results = {"sem_seg": {"mIoU": 42.5, "fwIoU": 56.25, "IoU-wall": 3.0}, "top1": 0.5}
    with caplog.at_level(logging.INFO, logger="uper_parsing.evaluation.evaluator"):
        print_csv_format(results)
    lines = [r.getMessage() for r in caplog.records]
    assert "copypaste: Task: sem_seg" in lines
    assert "copypaste: mIoU,fwIoU" in lines  # per-class keys left out
    assert "copypaste: 42.5000,56.2500" in lines
    assert "copypaste: top1=0.5" in lines


def test_build_evaluator(monkeypatch, tmp_path):
    metadata = {
        "sem": SimpleNamespace(
            stuff_classes=["a", "b"], ignore_label=255, evaluator_type="sem_seg"
        ),
        "odd": SimpleNamespace(stuff_classes=["a"], ignore_label=255, evaluator_type="odd_task"),
        "none": SimpleNamespace(stuff_classes=["a"], ignore_label=255),
    }
    catalog = SimpleNamespace(get=metadata.__getitem__)
    monkeypatch.setattr(uper_parsing.data, "MetadataCatalog", catalog, raising=False)
    cfg = SimpleNamespace(OUTPUT_DIR=str(tmp_path))

    assert EVALUATOR_REGISTRY.get("sem_seg") is SemSegEvaluator
    evaluator = build_evaluator(cfg, "sem")
    assert isinstance(evaluator, SemSegEvaluator)
    assert evaluator._output_dir == str(tmp_path / "inference" / "sem")
    assert build_evaluator(cfg, "sem", str(tmp_path / "x"))._output_dir == str(tmp_path / "x")
    for name, shown_type in [("odd", "'odd_task'"), ("none", "None")]:
        with pytest.raises(KeyError, match=rf"{name}.*{shown_type}.*known types: \[.*'sem_seg'"):
            build_evaluator(cfg, name)
