#!/usr/bin/env python
"""Measure training, inference or data-loading speed, peak GPU memory, MFU and the loss trend of
a config, optionally side by side with a peer codebase's model on the same batch.

    python tools/benchmark.py --config-file configs/ade20k/upernet_R50_bs16_160k.yaml \
        --task train --generated-data 256 --compare hf-upernet SOLVER.AMP.ENABLED True
    python tools/benchmark.py --config-file ... --task train --fixed-batch   # model step only
    python tools/benchmark.py --config-file ... --task inference --batch-size 16
    python tools/benchmark.py --config-file ... --task data                  # the loader alone

Training runs the real trainer (data loader, AMP, clipping, optimizer, LR schedule, the loss
reads of ``SOLVER.LOG_PERIOD``) for ``--warmup`` untimed and ``--iters`` timed steps; the device
is synchronised before and after the timed steps only, so the host queues a step while the device
runs the last one, as in training. ``--generated-data N`` benchmarks a config
without its dataset: N images and labels are generated once at the recipe's input sizes, class
counts and file formats (``data/datasets/generated.py``) and read by the config's real loader.
``--compare`` then pushes one batch of the same loader through the peer's model
(``tools/benchmark_peers.py``: transformers' UperNet, or detectron2's Panoptic FPN from a source
snapshot given by ``--detectron2-root``) and times its training / inference steps the same way.
Against detectron2 both sides start from the same random weights (``"peer_weights": true`` in the
result): the peer's model is built first and ours loads its weights through the project's
converter of detectron2 checkpoints, since how many proposals the RPN keeps, and with it the
cost of NMS and the RoI heads, depends on the weights.

Every run prints one JSON line (``BENCHMARK {...}``: device, torch version, precision, batch,
input size, images/s, ms per step, peak memory, FLOPs, MFU, the peer's figures and the ratio) and
appends it to ``--output`` (default ``OUTPUT_DIR/benchmark.jsonl``). MFU is model FLOPs per
second (fvcore's count with resizing left out, times 2 for multiply-adds, times 3 for a training
step) over the matrix-multiply rate this GPU reaches in the run's precision, measured in the run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from uper_parsing.config import get_cfg
from uper_parsing.data.datasets import register_declared_datasets
from uper_parsing.data.datasets.generated import register_generated_datasets
from uper_parsing.data.datasets.paths import datasets_root
from uper_parsing.engine import DefaultTrainer, resolve_device
from uper_parsing.layers import resize_impl
from uper_parsing.modeling import prepare_for_inference
from uper_parsing.utils.events import EventStorage
from uper_parsing.utils.logger import setup_logger

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchmark_peers as peers  # noqa: E402
from analyze_model import count_flops  # noqa: E402

logger = logging.getLogger("uper_parsing.benchmark")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _first_last(values: list[float], fraction: float = 0.1) -> tuple[float, float]:
    n = max(1, int(len(values) * fraction))
    return statistics.fmean(values[:n]), statistics.fmean(values[-n:])


def _richest_batch(loader: Iterable, draws: int = 20) -> list[dict]:
    """Of the first ``draws`` batches, the first one labelling the most tasks (multi-task
    sources label different tasks; single-task batches: the first)."""
    best, best_tasks = None, -1
    for _, batch in zip(range(draws), loader):
        tasks = len(batch[0].get("tasks", ()))
        if tasks > best_tasks:
            best, best_tasks = batch, tasks
        if "tasks" not in batch[0]:
            break
    return best


def time_window(step: Callable[[], Any], iters: int, warmup: int, device: str) -> float:
    """Seconds per call of ``step`` over ``iters`` calls after ``warmup`` untimed ones. The
    device is synchronised only before and after the timed calls, as in training, where the host
    queues the next step while the device still runs the last one."""
    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(device)
    return (time.perf_counter() - start) / iters


def _step_summary(seconds_per_step: float, images: int) -> dict[str, float]:
    return {"ms_per_step": 1e3 * seconds_per_step, "images_per_s": images / seconds_per_step}


def _peak_memory_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def _reset_peak_memory(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def precision_of(cfg: Any) -> torch.dtype | None:
    """The autocast dtype of the config's training (None: float32)."""
    if not cfg.SOLVER.AMP.ENABLED or not cfg.MODEL.DEVICE.startswith("cuda"):
        return None
    return getattr(torch, cfg.SOLVER.AMP.DTYPE)


def matmul_tflops(device: str, dtype: torch.dtype | None, n: int = 8192, iters: int = 20) -> float:
    """Dense matrix-multiply rate (TFLOP/s) of this device in ``dtype`` (None: float32 with the
    process's TF32 setting): the denominator of MFU."""
    a = torch.randn(n, n, device=device, dtype=dtype or torch.float32)
    b = torch.randn(n, n, device=device, dtype=dtype or torch.float32)
    return 2 * n**3 / time_window(lambda: a @ b, iters, 3, device) / 1e12


def model_gflops(cfg: Any, height: int, width: int) -> float:
    """fvcore's GFLOPs (one multiply-add = one flop) of the config's model (eager, fresh
    weights) on one (height, width) image, resizing left out (its matrix form would count as
    dense products)."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.COMPILE.ENABLED = False
    model = DefaultTrainer.build_model(cfg)
    with resize_impl("interpolate"):
        total, _ = count_flops(model, height, width)
    return total / 1e9


def _mfu(gflops: float | None, passes: int, images_per_s: float, peak: float | None):
    if not gflops or not peak:
        return None
    return 2 * passes * gflops * 1e9 * images_per_s / (peak * 1e12)


# ---------------------------------------------------------------------------------------------
# the peers


def build_peer(args: argparse.Namespace, cfg: Any) -> nn.Module | None:
    """The ``--compare`` peer's model for ``cfg`` (None without one), random weights, kept on
    the CPU until its turn so that our peak memory does not include it."""
    if not args.compare:
        return None
    return peers.build_peer_model(
        args.compare, cfg, device="cpu", detectron2_root=args.detectron2_root
    )


def load_peer_weights(model: nn.Module, name: str, peer: nn.Module) -> bool:
    """Load the weights of the peer's model into ours where the work depends on them
    (``benchmark_peers.peer_weights_as_ours``). Returns whether both sides now have the same
    weights; a peer network that differs from ours (a setting the peer cannot express, already
    warned about) keeps ours random, with a warning."""
    state = peers.peer_weights_as_ours(name, peer)
    if state is None:
        return False
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        logger.warning("The %s peer's weights do not fit our model; ours stay random: %s", name, e)
        return False
    logger.info("Our model starts from the %s peer's weights", name)
    return True


def calibrate_batch_norms(model: nn.Module, forward: Callable[[], Any]) -> int:
    """Set the running statistics of ``model``'s BatchNorms to the mean and variance of what one
    call of ``forward`` feeds them (the model in training mode, no gradients); the model's mode
    and the layers' momenta are restored. Returns the number of layers set.

    For inference with random weights: BatchNorm's initial statistics (mean 0, variance 1) let
    activations grow layer after layer through a ResNet, until a detector's class scores saturate
    (under float16 all but a few round to 0 and fail a score threshold of 0: 3 detections per
    image instead of 100). With statistics of real batches the network computes at trained-like
    scales, and a detector keeps as many boxes as trained weights would."""
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm))]
    momenta = [m.momentum for m in norms]
    training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: after one batch, that batch's statistics
    model.train()
    with torch.no_grad(), torch.compiler.set_stance("force_eager"):  # no training graph compiled
        forward()
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(training)
    return len(norms)


def detections_per_image(outputs: Any) -> float | None:
    """The mean number of detections in inference ``outputs`` (ours: ``instances`` a dict of
    Tensors; detectron2's: ``Instances``), None when they hold none."""
    if not isinstance(outputs, list) or not all("instances" in x for x in outputs):
        return None
    counts = [
        len(x["instances"]["scores"]) if isinstance(x["instances"], dict) else len(x["instances"])
        for x in outputs
    ]
    return statistics.fmean(counts) if counts else None


def peer_step(
    name: str,
    cfg: Any,
    batch: list[dict],
    *,
    train: bool,
    detectron2_root: str | None,
    model: nn.Module | None = None,
) -> Callable[[], Any]:
    """One training (or inference) step of the peer ``name`` on ``batch`` (its ``model``, or
    one built with random weights)."""
    device, dtype = cfg.MODEL.DEVICE, precision_of(cfg)
    if name == "hf-upernet":
        model, step = peers.hf_upernet_step(cfg, batch, device=device, amp_dtype=dtype, model=model)
    elif name == "detectron2":
        model, step = peers.detectron2_panoptic_step(
            cfg,
            batch,
            device=device,
            amp_dtype=dtype,
            detectron2_root=detectron2_root,
            model=model,
        )
    else:
        raise ValueError(f"--compare must be one of {peers.PEER_NAMES}, got {name!r}")
    if train:
        return step
    return peers.inference_step(name, cfg, model, batch, device=device, amp_dtype=dtype)


def compare(
    args: argparse.Namespace,
    cfg: Any,
    batch: list[dict],
    *,
    train: bool,
    ours: dict,
    peer: nn.Module | None = None,
) -> dict[str, Any]:
    """The peer's figures on ``batch`` (its model ``peer``, or a new one) and our speed-up."""
    device = cfg.MODEL.DEVICE
    _reset_peak_memory(device)
    step = peer_step(
        args.compare,
        cfg,
        batch,
        train=train,
        detectron2_root=args.detectron2_root,
        model=peer,
    )
    seconds = time_window(step, args.iters, args.warmup, device)
    result = {"name": args.compare, **_step_summary(seconds, len(batch))}
    result["peak_memory_gib"] = _peak_memory_gib(device)
    if not train:
        result["detections_per_image"] = detections_per_image(step())
    result["speedup"] = ours["images_per_s"] / result["images_per_s"]
    return result


# ---------------------------------------------------------------------------------------------
# the tasks


def _image_hw(batch: list[dict]) -> tuple[int, int]:
    return tuple(int(s) for s in batch[0]["image"].shape[-2:])


def _trainer_step(trainer: DefaultTrainer) -> Callable[[], None]:
    """One iteration of ``trainer`` as its loop runs it, less the hooks (the LR schedule kept)."""

    def step() -> None:
        trainer.iter = trainer.storage.iter
        trainer.run_step()
        trainer.scheduler.step()
        trainer.storage.step()

    return step


def benchmark_train(
    cfg: Any, args: argparse.Namespace, peer: nn.Module | None = None
) -> tuple[dict[str, Any], list[dict]]:
    """Steps of the real trainer (its model loaded with the weights of ``peer``, the
    ``--compare`` peer's model, when given); returns the summary and the last batch."""
    trainer = DefaultTrainer(cfg)
    same_weights = peer is not None and load_peer_weights(trainer.model, args.compare, peer)
    if args.fixed_batch:
        trainer.data_loader = itertools.repeat(_richest_batch(trainer.data_loader))
    device = cfg.MODEL.DEVICE
    with EventStorage(0) as storage:
        trainer.storage = storage
        seconds = time_window(_trainer_step(trainer), args.iters, args.warmup, device)
        trainer.flush_metrics()
    timed = range(args.warmup, args.warmup + args.iters)
    losses: dict[str, list[float]] = {}
    for name, history in storage.histories().items():
        # multi-task batches train some heads only: a loss has the values of its steps
        if name.startswith("loss_") or name == "total_loss":
            losses[name] = [value for value, _ in history.values()]
    data_times = [t for t, it in storage.history("data_time").values() if it in timed]
    batch = next(iter(trainer.data_loader))
    result = {
        "task": "train",
        "fixed_batch": args.fixed_batch,
        "batch_size": cfg.SOLVER.IMS_PER_BATCH,
        "input_hw": _image_hw(batch),
        **_step_summary(seconds, cfg.SOLVER.IMS_PER_BATCH),
        "median_data_wait_ms": 1e3 * statistics.median(data_times),
        "peak_memory_gib": _peak_memory_gib(device),
        "loss_first_last": {k: _first_last(v) for k, v in sorted(losses.items())},
        "total_loss_last20_mean": statistics.fmean(losses["total_loss"][-20:]),
        "peer_weights": same_weights,
    }
    if not args.no_flops:
        result["gflops_per_image"] = model_gflops(cfg, *result["input_hw"])
    del trainer  # free its memory before the peer runs
    return result, batch


def _unlabelled(batch: list[dict]) -> list[dict]:
    """Test inputs of a training batch: the images at their size, results at that size."""
    return [
        {"image": x["image"], "height": x["image"].shape[-2], "width": x["image"].shape[-1]}
        for x in batch
    ]


def benchmark_inference(
    cfg: Any, args: argparse.Namespace, peer: nn.Module | None = None
) -> tuple[dict[str, Any], list[dict]]:
    """Batches of ``--batch-size`` training crops (or, with 0, the test loader image by image,
    at the test sizes) through the model in eval mode (with the weights of ``peer``, when
    given).

    Random weights (without ``--keep-weights``) first get the BatchNorm statistics of the first
    training crops (:func:`calibrate_batch_norms`; detectron2's model gets them before ours loads
    its weights), so that a detector keeps trained-like numbers of boxes; the result gives
    ``detections_per_image`` on both sides."""
    model = DefaultTrainer.build_model(cfg)
    device = cfg.MODEL.DEVICE
    batch: list[dict] = []
    if args.batch_size > 0 or not args.keep_weights:  # to time, or to calibrate
        crops = iter(DefaultTrainer.build_train_loader(cfg))
        while len(batch) < max(args.batch_size, 1):  # training crops, from as many as needed
            batch += next(crops)
        batch = batch[: max(args.batch_size, 1)]
    same_weights = False
    if peer is not None and args.compare in peers.WEIGHT_DEPENDENT_PEERS:  # random, on the CPU
        calibrate_batch_norms(
            peer, peers.training_losses(args.compare, cfg, peer, batch, device="cpu")
        )
        same_weights = load_peer_weights(model, args.compare, peer)
    if not same_weights and not args.keep_weights:
        calibrate_batch_norms(model, lambda: model(batch))
    model = prepare_for_inference(model, cfg)
    _reset_peak_memory(device)
    if args.batch_size > 0:
        batches = itertools.repeat(_unlabelled(batch))
    else:
        batches = iter(DefaultTrainer.build_test_loader(cfg, cfg.DATASETS.TEST[0]))
        batch = None
    dtype = precision_of(cfg)
    autocast = torch.autocast("cuda", dtype=dtype, enabled=dtype is not None)
    inputs: list[dict] = []
    outputs: list[dict] = []

    def step() -> None:
        inputs[:] = next(batches)
        with torch.inference_mode(), autocast:
            outputs[:] = model(inputs)

    seconds = time_window(step, args.iters, args.warmup, device)
    images = len(inputs)
    result = {
        "task": "inference",
        "batch_size": images,
        "input_hw": _image_hw(inputs),
        **_step_summary(seconds, images),
        "peak_memory_gib": _peak_memory_gib(device),
        "peer_weights": same_weights,
        "detections_per_image": detections_per_image(outputs),
    }
    if not args.no_flops:
        result["gflops_per_image"] = model_gflops(cfg, *result["input_hw"])
    return result, batch


def benchmark_data(
    cfg: Any, args: argparse.Namespace, peer: nn.Module | None = None
) -> tuple[dict[str, Any], None]:
    """The training loader alone: seconds per batch, the decoding and augmentation included."""
    loader = iter(DefaultTrainer.build_train_loader(cfg))
    seconds = time_window(lambda: next(loader), args.iters, args.warmup, "cpu")
    result = {
        "task": "data",
        "batch_size": cfg.SOLVER.IMS_PER_BATCH,
        "num_workers": cfg.DATALOADER.NUM_WORKERS,
        **_step_summary(seconds, cfg.SOLVER.IMS_PER_BATCH),
    }
    return result, None


TASKS = {"train": benchmark_train, "inference": benchmark_inference, "data": benchmark_data}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--task", choices=sorted(TASKS), default="train")
    parser.add_argument("--iters", type=int, default=100, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=20, help="untimed iterations first")
    parser.add_argument("--output", default="", help="JSON-lines file the result is appended to")
    parser.add_argument(
        "--fixed-batch",
        action="store_true",
        help="train: repeat one batch (of a multi-task loader, one labelling the most tasks), "
        "timing the model step without the data loader and without batch-to-batch variation",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=0,
        help="inference: batches of this many training crops (0: the test loader, one image "
        "at a time at the test sizes)",
    )
    parser.add_argument(
        "--generated-data",
        type=int,
        default=0,
        metavar="N",
        help="generate N images and labels in the format, sizes and class counts of the "
        "config's task family and benchmark on them instead of DATASETS.TRAIN / TEST",
    )
    parser.add_argument(
        "--generated-root",
        default="",
        help="folder of generated sets (default: $UPER_PARSING_DATASETS or datasets/, "
        "sub-folder benchmark/)",
    )
    parser.add_argument("--compare", choices=peers.PEER_NAMES, help="also time the peer's model")
    parser.add_argument(
        "--detectron2-root",
        default=None,
        help="--compare detectron2: a source snapshot holding detectron2/ and configs/",
    )
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count / MFU")
    parser.add_argument(
        "--keep-weights",
        action="store_true",
        help="load MODEL.WEIGHTS / MODEL.BACKBONE.PRETRAINED (default: random weights)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser.parse_args(argv)


def setup_cfg(args: argparse.Namespace) -> Any:
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    resolve_device(cfg)
    if not args.keep_weights:  # random weights (inference calibrates their BatchNorms): no download
        cfg.MODEL.WEIGHTS, cfg.MODEL.BACKBONE.PRETRAINED = "", ""
    if args.generated_data > 0:
        root = args.generated_root or datasets_root() / "benchmark"
        train, test = register_generated_datasets(cfg, root, num_images=args.generated_data)
        cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (train,), (test,)
    cfg.freeze()
    register_declared_datasets(cfg)
    return cfg


def _environment(cfg: Any, args: argparse.Namespace) -> dict[str, Any]:
    device = cfg.MODEL.DEVICE
    dtype = precision_of(cfg)
    return {
        "config_file": args.config_file,
        "overrides": args.opts,
        "generated_data": args.generated_data,
        "random_weights": not args.keep_weights,
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
        "precision": str(dtype).replace("torch.", "") if dtype else "float32",
        "channels_last": cfg.MODEL.CHANNELS_LAST,
        "compile": cfg.MODEL.COMPILE.ENABLED,
        "resize_impl": cfg.MODEL.RESIZE_IMPL,
        "num_workers": cfg.DATALOADER.NUM_WORKERS,
    }


def run(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The benchmark of ``args``: (the config used, the result)."""
    if args.compare and (args.task == "data" or (args.task == "inference" and not args.batch_size)):
        raise ValueError("--compare needs --task train, or inference with --batch-size")
    cfg = setup_cfg(args)
    device = cfg.MODEL.DEVICE
    torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK
    peer = build_peer(args, cfg)
    _reset_peak_memory(device)
    result, batch = TASKS[args.task](cfg, args, peer)
    result.update(_environment(cfg, args))
    if device.startswith("cuda") and "gflops_per_image" in result:
        peak = matmul_tflops(device, precision_of(cfg))
        passes = 3 if args.task == "train" else 1
        result["matmul_tflops"] = peak
        result["mfu"] = _mfu(result["gflops_per_image"], passes, result["images_per_s"], peak)
    if args.compare:
        result["peer"] = compare(
            args, cfg, batch, train=args.task == "train", ours=result, peer=peer
        )
    return cfg, result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logger(name="uper_parsing")
    cfg, result = run(args)
    line = json.dumps(result, sort_keys=True)
    output = args.output or os.path.join(cfg.OUTPUT_DIR, "benchmark.jsonl")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "a", encoding="utf-8") as f:
        f.write(line + "\n")
    print(f"BENCHMARK {line}", flush=True)
    if "peer" in result:
        peer = result["peer"]
        logger.info(
            "%s: ours %.1f images/s, %s %.1f images/s: %.2fx",
            args.task,
            result["images_per_s"],
            peer["name"],
            peer["images_per_s"],
            peer["speedup"],
        )


if __name__ == "__main__":
    main()
