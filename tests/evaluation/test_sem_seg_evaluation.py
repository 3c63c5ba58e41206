"""SemSegEvaluator against hand-computed numbers and an independent per-class numpy oracle."""

from __future__ import annotations

import json
import math
import os
import pickle
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import uper_parsing.data
from uper_parsing.evaluation import SemSegEvaluator

IGNORE = 255
DATASET = "fake_sem_seg_val"


# ------------------------------------------------------------------------------------------------
# Stand-ins for the catalog and the label reader (module level so spawned workers can use them)
# ------------------------------------------------------------------------------------------------
class FakeMetadataCatalog:
    metadata: dict[str, SimpleNamespace] = {}

    @classmethod
    def get(cls, name: str) -> SimpleNamespace:
        return cls.metadata[name]


def fake_read_sem_seg(file_name, metadata, expected_hw=None) -> np.ndarray:
    labels = cv2.imread(str(file_name), cv2.IMREAD_UNCHANGED)
    if labels is None:
        raise FileNotFoundError(file_name)
    if expected_hw is not None and labels.shape != tuple(expected_hw):
        raise ValueError(f"{file_name}: size {labels.shape} != {expected_hw}")
    return labels


def install_fakes(num_classes: int, setattr_fn=setattr) -> None:
    names = [chr(ord("a") + i) for i in range(num_classes)]
    FakeMetadataCatalog.metadata[DATASET] = SimpleNamespace(
        stuff_classes=names,
        stuff_colors=[[10 * i, 20 * i, 30 * i] for i in range(num_classes)],
        ignore_label=IGNORE,
        evaluator_type="sem_seg",
    )
    setattr_fn(uper_parsing.data, "MetadataCatalog", FakeMetadataCatalog)
    setattr_fn(uper_parsing.data, "read_sem_seg", fake_read_sem_seg)


@pytest.fixture
def fakes(monkeypatch):
    def install(num_classes: int) -> None:
        install_fakes(
            num_classes,
            lambda obj, name, value: monkeypatch.setattr(obj, name, value, raising=False),
        )

    return install


def write_case(folder: Path, gts: list[np.ndarray], scores: list[np.ndarray]):
    """Label PNGs on disk -> (model inputs, model outputs)."""
    inputs, outputs = [], []
    for index, (gt, score) in enumerate(zip(gts, scores)):
        path = str(folder / f"label_{index}.png")
        assert cv2.imwrite(path, gt.astype(np.uint8))
        height, width = gt.shape
        inputs.append(
            {
                "file_name": f"img_{index}.jpg",
                "sem_seg_file_name": path,
                "height": height,
                "width": width,
                "image_id": str(index),
            }  # fmt: skip
        )
        outputs.append({"sem_seg": torch.from_numpy(score)})
    return inputs, outputs


def one_hot_scores(pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, H, W) float32 scores whose argmax is ``pred``."""
    return (np.arange(num_classes)[:, None, None] == pred[None]).astype(np.float32)


def run_evaluator(inputs, outputs, **kwargs) -> dict:
    evaluator = SemSegEvaluator(DATASET, **kwargs)
    evaluator.reset()
    for one_input, one_output in zip(inputs, outputs):
        evaluator.process([one_input], [one_output])
    return evaluator.evaluate()


# ------------------------------------------------------------------------------------------------
# Independent oracle: per-class masks, no confusion matrix
# ------------------------------------------------------------------------------------------------
def oracle(gts: list[np.ndarray], preds: list[np.ndarray], names: list[str]) -> dict[str, float]:
    k = len(names)
    inter, union, gt_px, pred_px = (np.zeros(k) for _ in range(4))
    for gt, pred in zip(gts, preds):
        scored = gt != IGNORE
        for c in range(k):
            g, p = (gt == c) & scored, (pred == c) & scored
            inter[c] += np.sum(g & p)
            union[c] += np.sum(g | p)
            gt_px[c] += np.sum(g)
            pred_px[c] += np.sum(p)
    out: dict[str, float] = {}
    ious = {c: inter[c] / union[c] for c in range(k) if union[c] > 0}
    accs = {c: inter[c] / gt_px[c] for c in range(k) if gt_px[c] > 0}
    out["mIoU"] = 100 * sum(ious.values()) / len(ious)
    out["fwIoU"] = 100 * sum(ious[c] * gt_px[c] / gt_px.sum() for c in ious)
    out["mACC"] = 100 * sum(accs.values()) / len(accs)
    out["pACC"] = 100 * inter.sum() / gt_px.sum()
    out.update({f"IoU-{names[c]}": 100 * v for c, v in ious.items()})
    out.update({f"ACC-{names[c]}": 100 * v for c, v in accs.items()})
    return out


# ------------------------------------------------------------------------------------------------
# Hand-made case with every convention in it
# ------------------------------------------------------------------------------------------------
GT_4x4 = np.array(
    [[0, 0, 1, 1],
     [0, 0, 1, 1],
     [2, 2, IGNORE, IGNORE],
     [2, 2, IGNORE, IGNORE]]
)  # fmt: skip
PRED_4x4 = np.array(
    [[0, 0, 1, 0],
     [0, 1, 1, 1],
     [3, 3, 2, 2],
     [2, 2, 0, 0]]
)  # fmt: skip
# 5 classes a..e. a: TP 3, GT 4, pred 4 -> IoU 3/5, acc 3/4.  b: the same.
# c: TP 2, GT 4, pred 2 -> IoU 2/4, acc 2/4.  d: predicted on 2 pixels, absent from GT -> IoU 0,
# no accuracy.  e: absent from both -> no IoU, no accuracy.  Predictions on ignore pixels are not
# counted (they would add 2 to c's and 2 to a's predicted pixels).
EXPECTED_4x4 = {
    "mIoU": 100 * (0.6 + 0.6 + 0.5 + 0.0) / 4,  # 42.5, d included, e left out
    "fwIoU": 100 * (4 * 0.6 + 4 * 0.6 + 4 * 0.5) / 12,  # 56.67, weighted by GT pixels
    "mACC": 100 * (0.75 + 0.75 + 0.5) / 3,  # 66.67, only classes present in GT
    "pACC": 100 * 8 / 12,  # 66.67
    "IoU-a": 60.0,
    "IoU-b": 60.0,
    "IoU-c": 50.0,
    "IoU-d": 0.0,
    "ACC-a": 75.0,
    "ACC-b": 75.0,
    "ACC-c": 50.0,
}


def test_hand_made_4x4(tmp_path, fakes):
    fakes(5)
    inputs, outputs = write_case(tmp_path, [GT_4x4], [one_hot_scores(PRED_4x4, 5)])
    results = run_evaluator(inputs, outputs, distributed=False)
    assert set(results) == {"sem_seg"}
    metrics = results["sem_seg"]
    assert metrics.keys() == EXPECTED_4x4.keys()  # nothing for "e"; no ACC for "d"
    assert metrics == pytest.approx(EXPECTED_4x4, abs=1e-9)
    assert metrics["mIoU"] == pytest.approx(42.5)
    assert metrics == pytest.approx(oracle([GT_4x4], [PRED_4x4], list("abcde")), abs=1e-9)


def test_confusion_matrix_layout(tmp_path, fakes):
    fakes(5)
    inputs, outputs = write_case(tmp_path, [GT_4x4], [one_hot_scores(PRED_4x4, 5)])
    evaluator = SemSegEvaluator(DATASET, distributed=False)
    evaluator.process(inputs, outputs)
    conf = evaluator.conf_matrix  # [pred, gt], last column = GT ignore
    assert conf.shape == (6, 6)
    assert conf.sum() == 16
    assert conf[:, 5].tolist() == [2, 0, 2, 0, 0, 0]  # predictions on the 4 ignore pixels
    assert np.diag(conf)[:5].tolist() == [3, 3, 2, 0, 0]
    assert conf[3, 2] == 2 and conf[1, 0] == 1 and conf[0, 1] == 1
    evaluator.reset()
    assert evaluator.conf_matrix.sum() == 0


def test_random_images_match_oracle(tmp_path, fakes):
    num_classes = 7
    fakes(num_classes)
    rng = np.random.default_rng(0)
    gts, preds, scores = [], [], []
    for height, width in [(17, 23), (31, 9), (45, 45), (8, 64)]:
        gt = rng.integers(0, num_classes - 1, (height, width))  # the last class never in GT
        gt[rng.random((height, width)) < 0.15] = IGNORE
        score = rng.normal(size=(num_classes, height, width)).astype(np.float32)
        score[:, gt == 2] += 1.5 * (np.arange(num_classes) == 2)[:, None]  # class 2 is easier
        gts.append(gt)
        scores.append(score)
        preds.append(score.argmax(0))
    inputs, outputs = write_case(tmp_path, gts, scores)
    metrics = run_evaluator(inputs, outputs, distributed=False)["sem_seg"]
    expected = oracle(gts, preds, list("abcdefg"))
    assert metrics.keys() == expected.keys()
    assert metrics == pytest.approx(expected, rel=1e-12)
    assert "ACC-g" not in metrics and "IoU-g" in metrics


def test_perfect_prediction_is_100(tmp_path, fakes):
    fakes(3)
    gt = np.array([[0, 1, 2], [2, 1, IGNORE]])
    pred = np.where(gt == IGNORE, 0, gt)
    inputs, outputs = write_case(tmp_path, [gt], [one_hot_scores(pred, 3)])
    metrics = run_evaluator(inputs, outputs, distributed=False)["sem_seg"]
    assert all(v == pytest.approx(100.0) for v in metrics.values())


def test_writes_json_and_overrides(tmp_path, fakes):
    fakes(5)
    inputs, outputs = write_case(tmp_path, [GT_4x4], [one_hot_scores(PRED_4x4, 5)])
    out_dir = tmp_path / "out"
    results = run_evaluator(inputs, outputs, distributed=False, output_dir=str(out_dir))
    saved = json.loads((out_dir / "sem_seg_evaluation.json").read_text())
    assert saved["sem_seg"] == pytest.approx(results["sem_seg"])


def test_ignore_label_and_num_classes_overrides(tmp_path, fakes):
    fakes(5)
    gt = np.array([[0, 1], [2, 2]])
    pred = np.array([[0, 1], [0, 2]])
    inputs, outputs = write_case(tmp_path, [gt], [one_hot_scores(pred, 3)])
    # With 2 as the ignore label only the top row is scored: both right, "c" undefined.
    metrics = run_evaluator(inputs, outputs, distributed=False, ignore_label=2, num_classes=3)
    assert metrics["sem_seg"] == pytest.approx(
        {
            "mIoU": 100,
            "fwIoU": 100,
            "mACC": 100,
            "pACC": 100,
            "IoU-a": 100,
            "IoU-b": 100,
            "ACC-a": 100,
            "ACC-b": 100,
        }  # fmt: skip
    )  # num_classes=3 keeps the metadata's first 3 names


def test_bad_inputs_raise_with_the_file_name(tmp_path, fakes):
    fakes(3)
    gt = np.array([[0, 1], [7, 1]])  # 7 is not a class and not the ignore label
    inputs, outputs = write_case(tmp_path, [gt], [one_hot_scores(np.zeros((2, 2), int), 3)])
    evaluator = SemSegEvaluator(DATASET, distributed=False)
    with pytest.raises(ValueError, match="label_0.png.*7"):
        evaluator.process(inputs, outputs)
    with pytest.raises(ValueError, match="K=3"):
        evaluator.process(inputs, [{"sem_seg": torch.zeros(4, 2, 2)}])


def test_no_pixels_gives_empty_results(fakes):
    fakes(3)
    assert SemSegEvaluator(DATASET, distributed=False).evaluate() == {}


def test_with_the_real_label_reader_when_available(tmp_path):
    """The same 4x4 case through the project's MetadataCatalog and read_sem_seg, once they exist."""
    catalog = getattr(uper_parsing.data, "MetadataCatalog", None)
    if catalog is None or not hasattr(uper_parsing.data, "read_sem_seg"):
        pytest.skip("uper_parsing.data does not provide MetadataCatalog / read_sem_seg yet")
    name = f"test_sem_seg_eval_{tmp_path.name}"
    catalog.get(name).set(
        stuff_classes=list("abcde"), ignore_label=IGNORE, evaluator_type="sem_seg"
    )
    inputs, outputs = write_case(tmp_path, [GT_4x4], [one_hot_scores(PRED_4x4, 5)])
    evaluator = SemSegEvaluator(name, distributed=False)
    evaluator.process(inputs, outputs)
    assert evaluator.evaluate()["sem_seg"] == pytest.approx(EXPECTED_4x4, abs=1e-9)


# ------------------------------------------------------------------------------------------------
# Two processes (gloo) == one process
# ------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed_worker(rank: int, world_size: int, port: int, case_file: str, out: str) -> None:
    with open(case_file, "rb") as f:
        num_classes, inputs, scores = pickle.load(f)
    install_fakes(num_classes)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        evaluator = SemSegEvaluator(DATASET, distributed=True)
        evaluator.reset()
        for index in range(rank, len(inputs), world_size):  # this rank's shard
            evaluator.process([inputs[index]], [{"sem_seg": torch.from_numpy(scores[index])}])
        results = evaluator.evaluate()
        with open(f"{out}.rank{rank}", "wb") as f:
            pickle.dump(results, f)
    finally:
        dist.destroy_process_group()
    # Leave without C++ static destructors: with this torch build, a gloo process aborts now and
    # then at interpreter exit ("terminate called without an active exception"), after all its
    # work is done and written. Errors above still propagate to mp.spawn as usual.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def test_two_processes_match_one(tmp_path, fakes):
    num_classes = 5
    fakes(num_classes)
    rng = np.random.default_rng(3)
    gts, scores = [], []
    for height, width in [(13, 21), (20, 20), (9, 33), (25, 11), (16, 16)]:
        gt = rng.integers(0, num_classes, (height, width))
        gt[rng.random((height, width)) < 0.1] = IGNORE
        gts.append(gt)
        scores.append(rng.normal(size=(num_classes, height, width)).astype(np.float32))
    inputs, outputs = write_case(tmp_path, gts, scores)
    single = run_evaluator(inputs, outputs, distributed=True)  # world size 1

    case_file = tmp_path / "case.pkl"
    case_file.write_bytes(pickle.dumps((num_classes, inputs, scores)))
    out = str(tmp_path / "results")
    mp.spawn(_distributed_worker, args=(2, _free_port(), str(case_file), out), nprocs=2, join=True)
    rank0 = pickle.loads(Path(f"{out}.rank0").read_bytes())
    rank1 = pickle.loads(Path(f"{out}.rank1").read_bytes())
    assert rank1 is None  # only the main process reports
    assert rank0 == single  # exactly: the gathered confusion matrices are summed integers
    assert not any(math.isnan(v) for v in rank0["sem_seg"].values())
