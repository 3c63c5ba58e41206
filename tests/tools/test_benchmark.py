"""tools/benchmark.py end to end on the CPU: the ADE20K UPerNet recipe (shrunk) on a generated
ADE-format set, training with the transformers peer on the same batch, inference and the loader
alone; each run one JSON line with the figures the issue asks for."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
SMALL = [
    "MODEL.DEVICE", "cpu",
    "SOLVER.IMS_PER_BATCH", "2",
    "MODEL.RESNETS.DEPTH", "18",
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32",
    "MODEL.AUX_HEAD.CONVS_DIM", "32",
    "INPUT.CROP.SIZE", "(64, 64)",
    "INPUT.RESIZE_SCALE", "[256, 64]",
    "DATALOADER.NUM_WORKERS", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def benchmark():
    sys.path.insert(0, str(ROOT / "tools"))
    spec = importlib.util.spec_from_file_location("benchmark", ROOT / "tools" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(ROOT / "tools"))


@pytest.fixture(scope="module")
def generated_root(tmp_path_factory):
    """One root for the module: a generated set registers its name once per process."""
    return tmp_path_factory.mktemp("generated")


def _run(benchmark, tmp_path, capsys, root, *args) -> dict:
    output = tmp_path / "bench.jsonl"
    benchmark.main(
        [
            "--config-file", str(ROOT / "configs/ade20k/upernet_R50_bs16_160k.yaml"),
            "--generated-data", "2",
            "--generated-root", str(root),
            "--iters", "2",
            "--warmup", "1",
            "--output", str(output),
            *args,
        ]
    )  # fmt: skip
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("BENCHMARK ")][-1]
    result = json.loads(line[len("BENCHMARK ") :])
    assert json.loads(output.read_text().splitlines()[-1]) == result
    return result


@pytest.fixture
def run(benchmark, tmp_path, capsys, generated_root):
    """``run(*args)``: the JSON result of ``benchmark.py`` with the shared arguments + args."""
    return lambda *args: _run(benchmark, tmp_path, capsys, generated_root, *args)


def test_train_with_the_transformers_peer(run):
    result = run("--task", "train", "--fixed-batch", "--compare", "hf-upernet", *SMALL)
    assert result["task"] == "train" and result["batch_size"] == 2
    assert result["input_hw"] == [64, 64] and result["precision"] == "float32"
    assert result["device"] == "cpu" and result["random_weights"]
    assert result["images_per_s"] > 0 and result["ms_per_step"] > 0
    assert result["gflops_per_image"] > 0  # fvcore's count of the shrunk model at 64x64
    assert set(result["loss_first_last"]) == {"loss_sem_seg", "loss_aux", "total_loss"}
    peer = result["peer"]
    assert peer["name"] == "hf-upernet" and peer["images_per_s"] > 0
    assert peer["speedup"] == pytest.approx(result["images_per_s"] / peer["images_per_s"])


def test_inference_batches_and_the_loader_alone(run):
    result = run("--task", "inference", "--batch-size", "2", "--no-flops", *SMALL)
    assert result["task"] == "inference" and result["batch_size"] == 2
    assert result["input_hw"] == [64, 64] and result["images_per_s"] > 0
    assert result["detections_per_image"] is None  # a semantic model detects nothing
    result = run("--task", "data", *SMALL)
    assert result["task"] == "data" and result["images_per_s"] > 0 and result["num_workers"] == 0


@pytest.mark.parametrize("task", [["--task", "data"], ["--task", "inference"]])
def test_compare_without_a_batch_is_refused_before_anything_runs(benchmark, task):
    """The loader alone and image-by-image inference have no batch for a peer: refused at once,
    before a config, a dataset or a model is built."""
    args = ["--config-file", "no/such/config.yaml", *task, "--compare", "hf-upernet"]
    with pytest.raises(ValueError, match="--compare needs --task train, or inference with"):
        benchmark.run(benchmark.parse_args(args))


def test_batch_norm_calibration_gives_the_statistics_of_the_batch(benchmark):
    """Random weights are timed with the BatchNorm statistics of a real batch: each layer's
    running mean / variance become exactly those of what the batch feeds it (unbiased variance,
    as BatchNorm keeps), and the model's mode and momenta are restored."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))
    net.add_module("norm", nn.BatchNorm2d(4, momentum=0.3))
    net.eval()
    x = torch.randn(5, 3, 9, 9) * 7 + 3
    assert benchmark.calibrate_batch_norms(net, lambda: net(x)) == 2
    assert not net.training and net[1].momentum == 0.1 and net.norm.momentum == 0.3
    with torch.no_grad():  # what each layer saw: the batch normalised by its own statistics
        first = net[0](x)
        normalised = nn.functional.batch_norm(first, None, None, net[1].weight, net[1].bias, True)
        second = net[3](net[2](normalised))
    for norm, seen in ((net[1], first), (net.norm, second)):
        torch.testing.assert_close(norm.running_mean, seen.mean((0, 2, 3)))
        torch.testing.assert_close(norm.running_var, seen.var((0, 2, 3), unbiased=True))


def test_detections_are_counted_on_both_sides(benchmark):
    ours = [{"instances": {"scores": torch.zeros(3)}}, {"instances": {"scores": torch.zeros(5)}}]
    assert benchmark.detections_per_image(ours) == 4.0
    theirs = [{"instances": [0] * 100}]  # detectron2's Instances: anything with a length
    assert benchmark.detections_per_image(theirs) == 100.0
    assert benchmark.detections_per_image([{"sem_seg": torch.zeros(2, 3, 3)}]) is None
    assert benchmark.detections_per_image(torch.zeros(2)) is None
