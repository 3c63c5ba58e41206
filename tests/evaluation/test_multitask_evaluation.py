"""MultiTaskEvaluator on hand-made 4x4 cases whose metrics are worked out by hand below."""

from __future__ import annotations

import json
import os
import pickle
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import uper_parsing.data
from uper_parsing.evaluation import EVALUATOR_REGISTRY, MultiTaskEvaluator, part_metrics

X = 255  # ignore label
DATASET = "fake_multitask_val"


# ------------------------------------------------------------------------------------------------
# Stand-ins for the catalog and the label reader (module level so spawned workers can use them)
# ------------------------------------------------------------------------------------------------
class FakeMetadataCatalog:
    metadata: dict[str, SimpleNamespace] = {}

    @classmethod
    def get(cls, name: str) -> SimpleNamespace:
        return cls.metadata[name]


def fake_read_multitask_label(
    file_name, metadata, task, expected_hw=None, *, objects=None
) -> np.ndarray:
    assert Path(file_name).name.endswith(f"_{task}.npy"), (file_name, task)
    assert task != "part" or objects is not None, "parts are read inside their objects"
    labels = np.load(file_name)
    if expected_hw is not None and labels.shape != tuple(expected_hw):
        raise ValueError(f"{file_name}: size {labels.shape} != {expected_hw}")
    return labels


def main_metadata() -> SimpleNamespace:
    """3 objects, the chair with "-" and 2 parts; 2 materials, 2 scenes, 2 textures."""
    return SimpleNamespace(
        object_classes=["wall", "chair", "floor"],
        object_colors=[[120, 120, 120], [200, 80, 40], [80, 50, 50]],
        part_classes=["chair/-", "chair/seat", "chair/leg"],
        object_parts=[[], [0, 1, 2], []],
        material_classes=["wood", "fabric"],
        material_colors=[[150, 100, 50], [60, 120, 200]],
        scene_classes=["kitchen", "bedroom"],
        texture_classes=["striped", "dotted"],
        ignore_label=X,
        evaluator_type="multitask",
    )


def install_fakes(metadata: SimpleNamespace, setattr_fn=setattr) -> None:
    FakeMetadataCatalog.metadata[DATASET] = metadata
    setattr_fn(uper_parsing.data, "MetadataCatalog", FakeMetadataCatalog)
    setattr_fn(uper_parsing.data, "read_multitask_label", fake_read_multitask_label)


@pytest.fixture
def fakes(monkeypatch):
    def install(metadata: SimpleNamespace) -> None:
        install_fakes(
            metadata, lambda obj, name, value: monkeypatch.setattr(obj, name, value, raising=False)
        )

    return install


# ------------------------------------------------------------------------------------------------
# Building cases: ground truth written to .npy files, predictions as one-hot scores
# ------------------------------------------------------------------------------------------------
def one_hot(labels, num_classes: int) -> np.ndarray:
    """(K, H, W) float32 scores whose argmax is ``labels`` (or (K,) for an int)."""
    labels = np.asarray(labels)
    return np.moveaxis(np.eye(num_classes, dtype=np.float32)[labels], -1, 0)


def make_input(folder: Path, name: str, tasks: list[str], **gt) -> dict:
    """A dataset dict; ``gt`` maps object / part / material to arrays, scene / texture to ints."""
    input_dict = {"file_name": f"{name}.jpg", "tasks": tasks}
    for key, value in gt.items():
        if key in ("scene", "texture"):
            input_dict[key] = value
        else:
            path = folder / f"{name}_{key}.npy"
            np.save(path, np.asarray(value, dtype=np.int64))
            input_dict[f"{key}_file_name"] = str(path)
    return input_dict


def make_output(meta, obj, part, material, scene: int, texture: int) -> dict:
    """Model output; ``part`` is the global part id each pixel's slice argmax should give."""
    return {
        "object": one_hot(obj, len(meta.object_classes)),
        "part": one_hot(part, len(meta.part_classes)),
        "material": one_hot(material, len(meta.material_classes)),
        "scene": one_hot(scene, len(meta.scene_classes)),
        "texture": one_hot(texture, len(meta.texture_classes)),
    }


def main_case(folder: Path) -> tuple[list[dict], list[dict]]:
    """A (object, part, material, scene), B (object, scene; other files present but not its
    tasks), C / D / E texture crops. Every image has every output, mostly wrong where unscored."""
    meta = main_metadata()
    zeros, ones = np.zeros((4, 4), int), np.ones((4, 4), int)
    a_in = make_input(
        folder,
        "a",
        ["object", "part", "material", "scene"],
        object=[[0, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0], [2, 2, 2, X]],
        part=[[X, X, X, X], [1, 1, 1, X], [2, 2, X, X], [X, X, X, X]],
        material=[[X, X, X, X], [0, 0, 0, X], [1, 1, 0, X], [X, X, X, X]],
        scene=0,
    )
    a_out = make_output(
        meta,
        obj=[[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [2, 2, 2, 0]],
        part=[[2, 2, 2, 2], [1, 2, 1, 1], [2, 1, 2, 1], [1, 1, 1, 1]],
        material=[[1, 1, 1, 1], [0, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]],
        scene=0,
        texture=1,
    )
    b_in = make_input(
        folder,
        "b",
        ["object", "scene"],
        object=[[2, 2, 2, 2], [2, 2, 2, 2], [0, 0, 0, 0], [0, 0, 0, 0]],
        part=zeros,
        material=zeros,
        scene=1,
        texture=0,
    )
    b_out = make_output(
        meta,
        obj=[[2, 2, 2, 2], [2, 2, 2, 2], [0, 0, 0, 0], [1, 1, 1, 1]],
        part=ones,
        material=ones,
        scene=0,
        texture=1,
    )
    crops = [("c", 1, 1), ("d", 0, 1), ("e", 0, 0)]  # (name, ground truth, prediction)
    inputs, outputs = [a_in, b_in], [a_out, b_out]
    for name, gt_texture, pred_texture in crops:
        inputs.append(make_input(folder, name, ["texture"], scene=1, texture=gt_texture))
        outputs.append(make_output(meta, ones, ones, ones, scene=0, texture=pred_texture))
    return inputs, outputs


def as_torch(outputs: list[dict]) -> list[dict]:
    return [{k: torch.from_numpy(v) for k, v in out.items()} for out in outputs]


def run_evaluator(inputs, outputs, **kwargs) -> dict:
    evaluator = MultiTaskEvaluator(DATASET, **kwargs)
    evaluator.reset()
    for input_dict, output in zip(inputs, as_torch(outputs)):
        evaluator.process([input_dict], [output])
    return evaluator.evaluate()


# Worked out by hand from main_case (confusion counts [pred, gt]), our protocol:
# object (A + B; A's ignore pixel left out): wall: TP 9, gt 14, pred 10 -> 9/15;
#   chair: TP 5, gt 6, pred 10 -> 5/11; floor: TP 11, gt 11, pred 11 -> 1. pAcc 25/31.
# part, chair (A only), seat / leg / not-chair: (seat, seat) 1, (leg, seat) 1, (not, seat) 1
#   [gt chair, predicted wall], (leg, leg) 1, (seat, leg) 1, (seat, not) 1 [predicted chair,
#   gt wall]; A[2, 2] is gt chair without a part label: ignored. Predicted parts outside the
#   predicted chair (row 0) do not count. seat IoU 1/(3+3-1), leg 1/(2+2-1); pAcc 2/5.
# material (A only; B's file is not among its tasks): wood TP 2, gt 4, pred 2 -> 1/2;
#   fabric TP 2, gt 2, pred 4 -> 1/2; pAcc 4/6.
# scene (A right, B wrong; the crops are not scene-labelled): 1/2.
# texture (C right, D wrong, E right; A and B are not texture-labelled): 2/3.
EXPECTED_OURS = {
    "scene": {"top1": 50.0},
    "object": {
        "mIoU": 100 * (9 / 15 + 5 / 11 + 1) / 3,
        "pAcc": 100 * 25 / 31,
        "IoU-wall": 60.0,
        "IoU-chair": 100 * 5 / 11,
        "IoU-floor": 100.0,
    },
    "part": {
        "mIoU": 100 * (1 / 5 + 1 / 3) / 2,
        "pAcc": 40.0,
        "mIoU-chair": 100 * (1 / 5 + 1 / 3) / 2,
        "pAcc-chair": 40.0,
    },
    "material": {"mIoU": 50.0, "pAcc": 100 * 4 / 6, "IoU-wood": 50.0, "IoU-fabric": 50.0},
    "texture": {"top1": 100 * 2 / 3},
}
# CSAIL's reference protocol: object and material unions are all non-empty, so they score as
# above. Part, chair (valid in A: it has seat and leg pixels), local [pred, gt] with 0 = "-" or
# outside the chair: (seat, seat) 1, (leg, seat) 1, (0, seat) 1, (leg, leg) 1, (seat, leg) 1,
# (leg, "-") 1 [A[2, 2]: its unlabelled part counts as "-", so the predicted leg is a false
# positive], (seat, 0) 1. seat: inter 1, pred 3, gt 3 -> 1/5; leg: inter 1, pred 3, gt 2 -> 1/4;
# pAcc 2/5.
EXPECTED_REFERENCE = {
    **EXPECTED_OURS,
    "part": {
        "mIoU": 100 * (1 / 5 + 1 / 4) / 2,
        "pAcc": 40.0,
        "mIoU-chair": 100 * (1 / 5 + 1 / 4) / 2,
        "pAcc-chair": 40.0,
    },
}
EXPECTED = {
    key: metrics
    for task in EXPECTED_OURS
    for key, metrics in ((task, EXPECTED_REFERENCE[task]), (f"{task}_ours", EXPECTED_OURS[task]))
}


def assert_results(results: dict, expected: dict) -> None:
    assert list(results) == list(expected)
    for task, metrics in expected.items():
        assert set(results[task]) == set(metrics), task
        for key, value in metrics.items():
            assert results[task][key] == pytest.approx(value, abs=1e-9), (task, key)


# ------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------
def test_hand_made_case_every_metric(tmp_path, fakes):
    fakes(main_metadata())
    inputs, outputs = main_case(tmp_path)
    results = run_evaluator(inputs, outputs, distributed=False, output_dir=str(tmp_path / "out"))
    assert_results(results, EXPECTED)
    written = json.loads((tmp_path / "out" / "multitask_evaluation.json").read_text())
    assert written == json.loads(json.dumps(results))


def test_image_without_a_task_contributes_nothing(tmp_path, fakes):
    """B and the crops carry files / labels for tasks they are not labelled for: dropping every
    image but A changes only what A alone scores."""
    fakes(main_metadata())
    inputs, outputs = main_case(tmp_path)
    results = run_evaluator(inputs[:1], outputs[:1], distributed=False)
    tasks = ("scene", "object", "part", "material")  # no texture image: omitted
    assert list(results) == [key for task in tasks for key in (task, f"{task}_ours")]
    for key in ("material", "material_ours", "part", "part_ours"):
        assert results[key] == pytest.approx(EXPECTED[key]), key
    assert results["scene"] == results["scene_ours"] == {"top1": 100.0}
    # A alone: wall TP 5, gt 6, pred 6 -> 5/7; chair TP 5, gt 6, pred 6 -> 5/7; floor 3/3.
    for key in ("object", "object_ours"):
        assert results[key]["IoU-wall"] == pytest.approx(100 * 5 / 7)
        assert results[key]["pAcc"] == pytest.approx(100 * 13 / 15)

    crops = run_evaluator(inputs[2:], outputs[2:], distributed=False)
    top1 = {"top1": pytest.approx(100 * 2 / 3)}
    assert crops == {"texture": top1, "texture_ours": top1}
    assert run_evaluator([], [], distributed=False) == {}


def part_metadata() -> SimpleNamespace:
    """Person (head, body) and car (wheel) and tree (trunk) have parts after their "-" part, sky
    has none."""
    return SimpleNamespace(
        object_classes=["person", "car", "sky", "tree"],
        part_classes=[
            *("person/-", "person/head", "person/body"),
            *("car/-", "car/wheel", "tree/-", "tree/trunk"),
        ],
        object_parts=[[0, 1, 2], [3, 4], [], [5, 6]],
        material_classes=["m"],
        scene_classes=["s"],
        texture_classes=["t"],
        ignore_label=X,
    )


def test_parts_masked_by_predicted_and_ground_truth_object_and_averaged(tmp_path, fakes):
    """Ours. Person: (head, head) 1, (head, body) 1, (body, body) 2 -> head 1/2, body 2/3,
    pAcc 3/4. Car: (wheel, wheel) 1; its unlabelled pixel is ignored -> 100 / 100. Tree:
    predicted once on sky, never in the ground truth -> not in the average (it would add an IoU
    of 0). Reference: person as ours; car's unlabelled pixel is "-", so the wheel predicted there
    is a false positive -> wheel 1/2, pAcc 1/1; tree is valid in no image -> left out."""
    meta = part_metadata()
    fakes(meta)
    input_dict = make_input(
        tmp_path,
        "p",
        ["object", "part"],
        object=[[0, 0, 1, 1], [0, 0, 2, 2]],
        part=[[1, 2, 4, X], [2, 2, X, X]],
    )
    output = {
        "object": one_hot([[0, 0, 1, 1], [0, 0, 3, 2]], 4),
        "part": one_hot([[1, 1, 4, 4], [2, 2, 6, 6]], 7),
    }
    evaluator = MultiTaskEvaluator(DATASET, distributed=False)
    evaluator.process([input_dict], [{k: torch.from_numpy(v) for k, v in output.items()}])
    results = evaluator.evaluate()
    person = 100 * (1 / 2 + 2 / 3) / 2
    assert results["part_ours"] == pytest.approx(
        {
            "mIoU": (person + 100) / 2,
            "pAcc": (75 + 100) / 2,
            "mIoU-person": person,
            "mIoU-car": 100.0,
            "pAcc-person": 75.0,
            "pAcc-car": 100.0,
        }
    )
    assert results["part"] == pytest.approx(
        {
            "mIoU": (person + 50) / 2,
            "pAcc": (75 + 100) / 2,
            "mIoU-person": person,
            "mIoU-car": 50.0,
            "pAcc-person": 75.0,
            "pAcc-car": 100.0,
        }
    )
    assert "object" in results and "material" not in results


def test_part_metrics_bins():
    """A (2+2)x(2+2) matrix: misses in the "not this object" row, false positives in its column,
    true negatives and the ignore bin left out."""
    conf = np.array(
        [
            # gt: p0 p1 not ignore
            [4, 0, 2, 9],  # pred p0
            [0, 0, 0, 9],  # pred p1
            [1, 0, 50, 9],  # pred "not this object"
            [0, 0, 0, 0],  # (ignore row, unused)
        ]
    )
    metrics = part_metrics(conf, ["p0", "p1"])
    # p0: TP 4, gt 5, pred 6 -> 4/7; p1: absent everywhere -> no IoU, not in the mean.
    assert metrics == pytest.approx({"mIoU": 100 * 4 / 7, "pAcc": 80.0, "IoU-p0": 100 * 4 / 7})
    assert part_metrics(np.zeros((4, 4), np.int64), ["p0", "p1"]) == {}


def test_registered_and_clear_errors(tmp_path, fakes):
    assert EVALUATOR_REGISTRY.get("multitask") is MultiTaskEvaluator
    meta = main_metadata()
    fakes(meta)
    evaluator = MultiTaskEvaluator(DATASET, distributed=False)
    out = as_torch([make_output(meta, np.zeros((4, 4), int), 0, 0, 0, 0)])
    with pytest.raises(KeyError, match="object_file_name"):
        evaluator.process([{"file_name": "x.jpg", "tasks": ["object"]}], out)
    bad = make_input(tmp_path, "bad", ["object"], object=np.full((4, 4), 7))
    with pytest.raises(ValueError, match="bad_object.npy"):
        evaluator.process([bad], out)


# ------------------------------------------------------------------------------------------------
# Two processes (gloo) == one process
# ------------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _distributed_worker(rank: int, world_size: int, port: int, case_file: str, out: str) -> None:
    with open(case_file, "rb") as f:
        inputs, outputs = pickle.load(f)
    install_fakes(main_metadata())
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        evaluator = MultiTaskEvaluator(DATASET, distributed=True)
        evaluator.reset()
        shard = range(rank, len(inputs), world_size)
        evaluator.process([inputs[i] for i in shard], as_torch([outputs[i] for i in shard]))
        results = evaluator.evaluate()
        with open(f"{out}.rank{rank}", "wb") as f:
            pickle.dump(results, f)
    finally:
        dist.destroy_process_group()
    # Leave without C++ static destructors: this torch build's gloo aborts now and then at
    # interpreter exit, after all work is done and written. Errors above still reach mp.spawn.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def test_two_processes_match_one(tmp_path, fakes):
    fakes(main_metadata())
    inputs, outputs = main_case(tmp_path)
    single = run_evaluator(inputs, outputs, distributed=True)  # world size 1
    case_file = tmp_path / "case.pkl"
    case_file.write_bytes(pickle.dumps((inputs, outputs)))
    out = str(tmp_path / "results")
    mp.spawn(_distributed_worker, args=(2, _free_port(), str(case_file), out), nprocs=2, join=True)
    rank0 = pickle.loads(Path(f"{out}.rank0").read_bytes())
    rank1 = pickle.loads(Path(f"{out}.rank1").read_bytes())
    assert rank1 is None  # only the main process reports
    assert rank0 == single  # exactly: gathered counts are summed integers
    assert_results(rank0, EXPECTED)
