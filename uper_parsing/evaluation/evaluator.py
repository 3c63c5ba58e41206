"""The evaluator contract, a container of evaluators, and the inference loop that feeds them."""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..utils import comm

__all__ = [
    "DatasetEvaluator",
    "DatasetEvaluators",
    "inference_context",
    "inference_on_dataset",
    "print_csv_format",
]

logger = logging.getLogger(__name__)

# Iterations left out of the per-image timing: the first calls pay for allocator growth,
# cuDNN autotuning and lazy initialisation.
_NUM_WARMUP = 5


class DatasetEvaluator:
    """Accumulates statistics over (inputs, outputs) pairs and turns them into metrics.

    Subclasses implement the three methods; ``evaluate`` gathers across processes and returns
    ``{task: {metric: value}}`` on the main process and ``None`` on the others.
    """

    def reset(self) -> None:
        """Forget everything seen so far (called before a new evaluation round)."""

    def process(self, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
        """Record one batch: ``inputs`` as given to the model, ``outputs`` as it returned them."""

    def evaluate(self) -> dict[str, dict[str, float]] | None:
        """Metrics over every batch processed since ``reset`` (``None`` on non-main ranks)."""
        return None


class DatasetEvaluators(DatasetEvaluator):
    """Runs several evaluators side by side and merges their result dicts.

    Two evaluators that report the same task key are an error: one would silently hide the other.
    """

    def __init__(self, evaluators: Sequence[DatasetEvaluator]) -> None:
        super().__init__()
        self._evaluators = list(evaluators)

    def __len__(self) -> int:
        return len(self._evaluators)

    def __iter__(self) -> Iterator[DatasetEvaluator]:
        return iter(self._evaluators)

    def reset(self) -> None:
        for evaluator in self._evaluators:
            evaluator.reset()

    def process(self, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
        for evaluator in self._evaluators:
            evaluator.process(inputs, outputs)

    def evaluate(self) -> dict[str, dict[str, float]]:
        results: dict[str, dict[str, float]] = {}
        for evaluator in self._evaluators:
            result = evaluator.evaluate()
            if not comm.is_main_process() or result is None:
                continue
            for task, metrics in result.items():
                if task in results:
                    raise KeyError(
                        f"Task {task!r} is reported by more than one evaluator "
                        f"(second: {type(evaluator).__name__}); task keys must be unique."
                    )
                results[task] = metrics
        return results


@contextmanager
def inference_context(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode for the block and restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _as_evaluator(
    evaluator: DatasetEvaluator | Sequence[DatasetEvaluator] | None,
) -> DatasetEvaluator:
    if evaluator is None:
        return DatasetEvaluators([])
    if isinstance(evaluator, DatasetEvaluator):
        return evaluator
    return DatasetEvaluators(evaluator)


def _sync_device() -> None:
    """Wait for queued GPU work so that the timer measures it."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _format_seconds(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(round(seconds))))


def inference_on_dataset(
    model: nn.Module | Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
    data_loader: Iterable[list[dict[str, Any]]],
    evaluator: DatasetEvaluator | Sequence[DatasetEvaluator] | None,
) -> dict[str, dict[str, float]]:
    """Run ``model`` over ``data_loader`` and evaluate its outputs.

    The model runs in eval mode (its previous mode is restored afterwards) under
    ``torch.inference_mode``. Each process sees its own shard of the data; the evaluator gathers.

    Args:
        model: called as ``model(inputs) -> outputs`` on each batch (``list[dict]`` both ways).
        data_loader: iterable of batches; its ``len`` (when it has one) sizes the progress bar.
        evaluator: one evaluator, a list of them, or ``None`` to only time the model.

    Returns:
        ``{task: {metric: value}}`` on the main process; ``{}`` on the others.
    """
    evaluator = _as_evaluator(evaluator)
    evaluator.reset()
    try:
        total: int | None = len(data_loader)  # type: ignore[arg-type]
    except (TypeError, NotImplementedError):  # iterable datasets may have no length
        total = None
    logger.info("Start inference on %s batches", "an unknown number of" if total is None else total)

    iter_starts: list[float] = []  # wall clock at the start of each iteration (data included)
    compute_times: list[float] = []
    batch_sizes: list[int] = []
    data_time = eval_time = 0.0
    with ExitStack() as stack:
        if isinstance(model, nn.Module):
            stack.enter_context(inference_context(model))
        stack.enter_context(torch.inference_mode())
        progress = tqdm(
            total=total, desc="inference", unit="batch", disable=not comm.is_main_process()
        )
        stack.callback(progress.close)

        data_start = time.perf_counter()
        for inputs in data_loader:
            iter_starts.append(data_start)
            data_time += time.perf_counter() - data_start
            compute_start = time.perf_counter()
            outputs = model(inputs)
            _sync_device()
            compute_times.append(time.perf_counter() - compute_start)
            batch_sizes.append(len(inputs))

            eval_start = time.perf_counter()
            evaluator.process(inputs, outputs)
            eval_time += time.perf_counter() - eval_start
            progress.update(1)
            data_start = time.perf_counter()
        end_time = time.perf_counter()

    _log_timing(iter_starts, end_time, compute_times, batch_sizes, data_time, eval_time)
    results = evaluator.evaluate()
    # Evaluators return None on non-main ranks; callers can index the result on every rank.
    return results if results is not None else {}


def _log_timing(
    iter_starts: list[float],
    end_time: float,
    compute_times: list[float],
    batch_sizes: list[int],
    data_time: float,
    eval_time: float,
) -> None:
    """Log wall-clock and pure model time per image, leaving the warm-up iterations out."""
    num_images = sum(batch_sizes)
    if num_images == 0:
        logger.warning("Inference ran over an empty data loader.")
        return
    # Leave the warm-up iterations out, unless nothing would remain.
    warmup = _NUM_WARMUP if len(compute_times) > _NUM_WARMUP else 0
    timed_images = sum(batch_sizes[warmup:])
    wall_time = end_time - iter_starts[warmup]
    compute_time = sum(compute_times[warmup:])
    num_devices = comm.get_world_size()
    logger.info(
        "Total inference time: %s (%.4f s / img per device, on %d devices) over %d images; "
        "%d warm-up iterations left out of the timing",
        _format_seconds(end_time - iter_starts[0]),
        wall_time / timed_images,
        num_devices,
        num_images,
        warmup,
    )
    logger.info(
        "Total inference pure compute time: %s (%.4f s / img per device, on %d devices)",
        _format_seconds(compute_time),
        compute_time / timed_images,
        num_devices,
    )
    logger.info(
        "Data loading: %.4f s / img, evaluator processing: %.4f s / img",
        data_time / num_images,
        eval_time / num_images,
    )


def print_csv_format(results: Mapping[str, Any]) -> None:
    """Log the headline metrics of each task as comma-separated lines, ready to paste.

    Per-class entries (keys containing ``-``, such as ``IoU-wall``) are left out.
    """
    for task, metrics in results.items():
        if not isinstance(metrics, Mapping):
            logger.info("copypaste: %s=%s", task, metrics)
            continue
        headline = [(name, value) for name, value in metrics.items() if "-" not in name]
        logger.info("copypaste: Task: %s", task)
        logger.info("copypaste: %s", ",".join(name for name, _ in headline))
        logger.info("copypaste: %s", ",".join(f"{float(value):.4f}" for _, value in headline))
