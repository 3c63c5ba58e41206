#!/usr/bin/env python
"""Measure training or inference speed, peak GPU memory and the loss trend of a config.

    python tools/benchmark.py --config-file configs/ade20k/upernet_R50_bs16_160k.yaml \
        --task train --iters 100 --warmup 20 SOLVER.AMP.ENABLED True SOLVER.AMP.DTYPE bfloat16
    python tools/benchmark.py --config-file ... --task train --fixed-batch   # model step only
    python tools/benchmark.py --config-file ... --task inference --iters 200

Training runs the real trainer (data loader, AMP, clipping, optimizer, LR schedule) step by step
and times each step with the device synchronised. Prints a summary and writes it as JSON
(``--output``, default ``OUTPUT_DIR/benchmark_<task>.json``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import statistics
import time
from typing import Any

import torch

from uper_parsing.config import get_cfg
from uper_parsing.engine import DefaultTrainer, resolve_device
from uper_parsing.utils.events import EventStorage
from uper_parsing.utils.logger import setup_logger

logger = logging.getLogger("uper_parsing.benchmark")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _first_last(values: list[float], fraction: float = 0.1) -> tuple[float, float]:
    n = max(1, int(len(values) * fraction))
    return statistics.fmean(values[:n]), statistics.fmean(values[-n:])


def _richest_batch(loader: Any, draws: int = 20) -> list[dict]:
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


def benchmark_train(cfg: Any, iters: int, warmup: int, fixed_batch: bool = False) -> dict[str, Any]:
    trainer = DefaultTrainer(cfg)
    if fixed_batch:
        trainer.data_loader = itertools.repeat(_richest_batch(trainer.data_loader))
    device = cfg.MODEL.DEVICE
    step_times: list[float] = []
    losses: dict[str, list[float]] = {}
    with EventStorage(0) as storage:
        trainer.storage = storage
        for it in range(warmup + iters):
            storage.iter = trainer.iter = it
            _sync(device)
            start = time.perf_counter()
            trainer.run_step()
            trainer.scheduler.step()
            _sync(device)
            if it >= warmup:
                step_times.append(time.perf_counter() - start)
            for name, (value, at) in storage.latest().items():
                # multi-task batches train some heads only: keep the losses of this step
                if at == it and (name.startswith("loss_") or name == "total_loss"):
                    losses.setdefault(name, []).append(float(value))
            storage.step()
    median = statistics.median(step_times)
    result = {
        "task": "train",
        "fixed_batch": fixed_batch,
        "images_per_batch": cfg.SOLVER.IMS_PER_BATCH,
        "median_step_s": median,
        "mean_step_s": statistics.fmean(step_times),
        "images_per_s": cfg.SOLVER.IMS_PER_BATCH / median,
        "loss_first_last": {k: _first_last(v) for k, v in sorted(losses.items())},
    }
    return result


def benchmark_inference(cfg: Any, iters: int, warmup: int) -> dict[str, Any]:
    model = DefaultTrainer.build_model(cfg)
    model.eval()
    loader = DefaultTrainer.build_test_loader(cfg, cfg.DATASETS.TEST[0])
    device = cfg.MODEL.DEVICE
    times: list[float] = []
    with torch.inference_mode():
        for idx, batch in enumerate(loader):
            if idx >= warmup + iters:
                break
            _sync(device)
            start = time.perf_counter()
            model(batch)
            _sync(device)
            if idx >= warmup:
                times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"task": "inference", "median_image_s": median, "images_per_s": 1.0 / median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--task", choices=["train", "inference"], default="train")
    parser.add_argument("--iters", type=int, default=100, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=20, help="untimed iterations first")
    parser.add_argument("--output", default="", help="JSON file for the summary")
    parser.add_argument(
        "--fixed-batch",
        action="store_true",
        help="train: repeat one batch (of a multi-task loader, one labelling the most tasks), "
        "timing the model step without the data loader and without batch-to-batch variation",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args()

    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    resolve_device(cfg)
    cfg.freeze()
    setup_logger(name="uper_parsing")
    torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK
    if cfg.MODEL.DEVICE.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    if args.task == "train":
        result = benchmark_train(cfg, args.iters, args.warmup, args.fixed_batch)
    else:
        result = benchmark_inference(cfg, args.iters, args.warmup)
    result["config_file"] = args.config_file
    result["overrides"] = args.opts
    result["device"] = (
        torch.cuda.get_device_name() if cfg.MODEL.DEVICE.startswith("cuda") else "cpu"
    )
    if cfg.MODEL.DEVICE.startswith("cuda"):
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    output = args.output or os.path.join(cfg.OUTPUT_DIR, f"benchmark_{args.task}.json")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    logger.info("Benchmark summary (also in %s):\n%s", output, json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
