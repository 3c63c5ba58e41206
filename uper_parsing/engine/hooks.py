"""Hooks: timing, LR scheduling, checkpointing (periodic and best), evaluation, metric writing,
stopping on signals."""

from __future__ import annotations

import datetime
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from fvcore.common.timer import Timer

from ..checkpoint import Checkpointer
from ..checkpoint import PeriodicCheckpointer as _PeriodicCheckpointer
from ..utils import comm
from ..utils.events import EventWriter
from .train_loop import PREEMPTION_SIGNALS, HookBase, restore_signal_handlers

__all__ = [
    "IterationTimer",
    "LRScheduler",
    "PeriodicWriter",
    "PeriodicCheckpointer",
    "EvalHook",
    "BestCheckpointer",
    "StopOnSignal",
    "SkippedSamples",
    "flatten_results_dict",
    "is_periodic_eval_iteration",
]

logger = logging.getLogger(__name__)


class IterationTimer(HookBase):
    """Put the time of each iteration (``run_step`` plus the hooks' ``before_step``) into the
    storage as ``time``, and log the overall speed after training. The first ``warmup_iter``
    iterations are left out of the speed."""

    def __init__(self, warmup_iter: int = 3) -> None:
        self._warmup_iter = warmup_iter
        self._step_timer = Timer()
        self._start_time = time.perf_counter()
        self._total_timer = Timer()

    def before_train(self) -> None:
        self._start_time = time.perf_counter()
        self._total_timer.reset()
        self._total_timer.pause()

    def after_train(self) -> None:
        total_time = time.perf_counter() - self._start_time
        timed_time = self._total_timer.seconds()
        hook_time = total_time - timed_time
        num_iter = self.trainer.iter - self.trainer.start_iter - self._warmup_iter + 1
        if num_iter > 0 and timed_time > 0:
            logger.info(
                "Overall training speed: %d iterations in %s (%.4f s / it)",
                num_iter,
                datetime.timedelta(seconds=int(timed_time)),
                timed_time / num_iter,
            )
        logger.info(
            "Total training time: %s (%s on hooks)",
            datetime.timedelta(seconds=int(total_time)),
            datetime.timedelta(seconds=int(hook_time)),
        )

    def before_step(self) -> None:
        self._step_timer.reset()
        self._total_timer.resume()

    def after_step(self) -> None:
        iter_done = self.trainer.iter - self.trainer.start_iter + 1
        if iter_done >= self._warmup_iter:
            self.trainer.storage.put_scalars(time=self._step_timer.seconds())
        else:  # restart the clock until warm-up is over
            self._start_time = time.perf_counter()
            self._total_timer.reset()
        self._total_timer.pause()


class LRScheduler(HookBase):
    """After each iteration record ``lr`` (the largest group lr, i.e. the head's when the
    backbone has a multiplier <= 1) and step the scheduler."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ) -> None:
        """Optimizer and scheduler default to ``trainer.optimizer`` / ``trainer.scheduler``."""
        self._optimizer = optimizer
        self._scheduler = scheduler

    def before_train(self) -> None:
        self._optimizer = self._optimizer or self.trainer.optimizer
        self._scheduler = self._scheduler or self.trainer.scheduler

    @property
    def scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        assert self._scheduler is not None
        return self._scheduler

    def after_step(self) -> None:
        assert self._optimizer is not None
        lr = max(group["lr"] for group in self._optimizer.param_groups)
        self.trainer.storage.put_scalar("lr", lr, smoothing_hint=False)
        self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state_dict)


class PeriodicWriter(HookBase):
    """Call every writer after every ``period``-th iteration, after the last one, and (then
    closing them) after training."""

    def __init__(self, writers: Sequence[EventWriter], period: int = 20) -> None:
        for w in writers:
            if not isinstance(w, EventWriter):
                raise TypeError(f"{w!r} is not an EventWriter")
        self._writers = list(writers)
        self._period = period

    def after_step(self) -> None:
        it = self.trainer.iter
        if (it + 1) % self._period == 0 or it == self.trainer.max_iter - 1:
            self.trainer.flush_metrics()
            for writer in self._writers:
                writer.write()

    def after_train(self) -> None:
        for writer in self._writers:
            writer.write()  # e.g. the final evaluation results
            writer.close()


class PeriodicCheckpointer(_PeriodicCheckpointer, HookBase):
    """``checkpoint.PeriodicCheckpointer`` as a hook: saves ``model_{iter:07d}.pth`` every
    ``period`` iterations and ``model_final.pth`` after the last one (``max_iter`` is taken from
    the trainer).

    Construct as ``PeriodicCheckpointer(checkpointer, period, max_to_keep=None)``.
    """

    def before_train(self) -> None:
        self.max_iter = self.trainer.max_iter

    def after_step(self) -> None:
        it = self.trainer.iter
        if (self.period > 0 and (it + 1) % self.period == 0) or it >= self.max_iter - 1:
            self.trainer.flush_metrics()  # a diverged model raises here, before it is saved
        self.step(it)


def flatten_results_dict(results: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"sem_seg": {"mIoU": 40.0}}`` -> ``{"sem_seg/mIoU": 40.0}`` (any depth)."""
    flat: dict[str, Any] = {}
    for key, value in results.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_results_dict(value, prefix=name + "/"))
        else:
            flat[name] = value
    return flat


def is_periodic_eval_iteration(eval_period: int, iteration: int, max_iter: int) -> bool:
    """Whether :class:`EvalHook` evaluates after ``iteration`` in ``after_step`` (every
    ``eval_period``-th; the evaluation after the last iteration happens in ``after_train``)."""
    next_iter = iteration + 1
    return eval_period > 0 and next_iter % eval_period == 0 and next_iter != max_iter


class EvalHook(HookBase):
    """Run ``eval_function() -> {task: {metric: value}}`` after every ``eval_period``-th
    iteration and after training completes (``eval_period <= 0``: only then), putting the
    results into the storage as ``task/metric`` scalars; all processes synchronize after it.

    ``eval_function`` runs on every process (evaluators gather); it may return ``{}`` or ``None``
    on processes other than the main one.
    """

    def __init__(self, eval_period: int, eval_function: Callable[[], Mapping[str, Any] | None]):
        self._period = eval_period
        self._func = eval_function

    def _do_eval(self) -> None:
        results = self._func()
        if results:
            if not isinstance(results, Mapping):
                raise TypeError(f"eval_function must return a dict, got {type(results).__name__}")
            scalars = {}
            for name, value in flatten_results_dict(results).items():
                try:
                    scalars[name] = float(value)
                except (TypeError, ValueError):
                    logger.warning(
                        "Evaluation result %s=%r is not a number; not logged", name, value
                    )
            self.trainer.storage.put_scalars(**scalars, smoothing_hint=False)
        comm.synchronize()  # evaluation can take different times on different processes

    def after_step(self) -> None:
        if is_periodic_eval_iteration(self._period, self.trainer.iter, self.trainer.max_iter):
            self._do_eval()

    def after_train(self) -> None:
        if self.trainer.iter >= self.trainer.max_iter:  # not after a failed run
            self._do_eval()


class BestCheckpointer(HookBase):
    """After each evaluation of an :class:`EvalHook` with the same ``eval_period`` (register it
    after that hook), save ``<file_prefix>.pth`` through ``checkpointer`` when the evaluation's
    ``metric`` (a ``task/metric`` key of the storage, e.g. ``sem_seg/mIoU``) beats the best so
    far: larger with ``mode="max"``, smaller with ``"min"`` (a tie keeps the earlier file).

    The file holds what every checkpoint holds, ``iteration`` and ``best_metric`` =
    ``{"name", "value", "mode"}``; it is not tagged ``last_checkpoint``. A resumed run
    (``trainer.start_iter > 0``) reads the best so far back from it, so a worse value after
    ``--resume`` leaves the file as it is; a run from iteration 0 starts a new best.
    """

    def __init__(
        self,
        eval_period: int,
        checkpointer: Checkpointer,
        metric: str,
        *,
        mode: str = "max",
        file_prefix: str = "model_best",
    ) -> None:
        if mode not in ("max", "min"):
            raise ValueError(
                "BestCheckpointer mode (TEST.BEST_CHECKPOINT.MODE) must be 'max' or 'min', "
                f"got {mode!r}"
            )
        if not metric:
            raise ValueError(
                "BestCheckpointer needs a results key (TEST.BEST_CHECKPOINT.METRIC), "
                "e.g. 'sem_seg/mIoU'"
            )
        self._period = eval_period
        self._checkpointer = checkpointer
        self.metric = metric
        self.mode = mode
        self._file_prefix = file_prefix
        self.best: tuple[float, int] | None = None  # (value, iteration)

    @property
    def path(self) -> str:
        return os.path.join(self._checkpointer.save_dir, f"{self._file_prefix}.pth")

    def before_train(self) -> None:
        self.best = self._read_best() if self.trainer.start_iter > 0 else None
        if self.best is not None:
            logger.info(
                "Best %s so far: %.4f after iteration %d (%s)",
                self.metric,
                self.best[0],
                self.best[1],
                self.path,
            )

    def after_step(self) -> None:
        if is_periodic_eval_iteration(self._period, self.trainer.iter, self.trainer.max_iter):
            self._check(self.trainer.iter)

    def after_train(self) -> None:
        if self.trainer.iter >= self.trainer.max_iter:  # EvalHook evaluated the final model
            self._check(self.trainer.max_iter - 1)

    def _read_best(self) -> tuple[float, int] | None:
        """(value, iteration) stored in the file by this metric and mode; None without one."""
        if not os.path.isfile(self.path):
            return None
        try:
            data = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
            best, iteration = data["best_metric"], int(data["iteration"])
            stored = (best["name"], best["mode"], float(best["value"]))
        except Exception as e:  # whatever is wrong with the file, the next evaluation replaces it
            logger.warning(
                "Cannot read the best %s so far from %s (%s): the next evaluation replaces it",
                self.metric,
                self.path,
                e,
            )
            return None
        if stored[:2] != (self.metric, self.mode):
            logger.warning(
                "%s was chosen by %s (%s), not %s (%s): the next evaluation replaces it",
                self.path,
                *stored[:2],
                self.metric,
                self.mode,
            )
            return None
        return stored[2], iteration

    def _check(self, iteration: int) -> None:
        """Save the model after ``iteration`` if the evaluation just stored a better value."""
        value = self._evaluated_value(iteration)
        if value is None:
            return
        if self.best is not None and not self._better(value, self.best[0]):
            logger.info(
                "%s = %.4f after iteration %d, not better than %.4f after iteration %d: %s kept",
                self.metric,
                value,
                iteration,
                *self.best,
                self.path,
            )
            return
        best_metric = {"name": self.metric, "value": value, "mode": self.mode}
        self._checkpointer.save(
            self._file_prefix, tag=False, iteration=iteration, best_metric=best_metric
        )
        previous = (
            "none" if self.best is None else f"{self.best[0]:.4f} after iteration {self.best[1]}"
        )
        logger.info(
            "New best %s = %.4f after iteration %d (previous: %s): saved %s",
            self.metric,
            value,
            iteration,
            previous,
            self.path,
        )
        self.best = (value, iteration)

    def _evaluated_value(self, iteration: int) -> float | None:
        """The metric the evaluation after ``iteration`` put into the storage; None (with a
        warning) when it put none or a value that is not finite."""
        storage = self.trainer.storage
        latest = storage.latest()
        value, stamp = latest.get(self.metric, (math.nan, -1))
        if stamp != storage.iter:  # not put by this evaluation
            results = sorted(k for k, (_, it) in latest.items() if it == storage.iter and "/" in k)
            logger.warning(
                "The evaluation after iteration %d stored no %r (TEST.BEST_CHECKPOINT.METRIC); "
                "its results keys are %s; %s not updated",
                iteration,
                self.metric,
                ", ".join(results) or "none",
                self.path,
            )
            return None
        if not math.isfinite(value):
            logger.warning(
                "%s = %s after iteration %d: %s not updated",
                self.metric,
                value,
                iteration,
                self.path,
            )
            return None
        return float(value)

    def _better(self, value: float, best: float) -> bool:
        return value > best if self.mode == "max" else value < best


class StopOnSignal(HookBase):
    """While training, each of ``signals`` (default SIGTERM and SIGUSR1, what schedulers such as
    SLURM send before killing a job) asks the trainer to stop after the current iteration
    (``trainer.request_stop()``: the handler only sets a flag, no I/O). The handlers are
    installed in ``before_train`` and the previous ones restored in ``after_train``.

    Python handles signals in the main thread only: a trainer running in another thread trains
    without them (with a warning).
    """

    def __init__(self, signals: Sequence[int] = PREEMPTION_SIGNALS) -> None:
        self._signals = tuple(signals)
        self._previous: dict[int, Any] = {}
        self.received: list[int] = []  # signal numbers, in order of arrival

    def before_train(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            logger.warning("Training outside the main thread: stop signals are not handled")
            return
        for sig in self._signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.received.append(signum)
        self.trainer.request_stop()

    def after_train(self) -> None:
        restore_signal_handlers(self._previous)
        self._previous.clear()
        if self.received:
            names = ", ".join(signal.Signals(s).name for s in self.received)
            logger.info("Received %s while training", names)


class SkippedSamples(HookBase):
    """With ``DATALOADER.SKIP_BAD_SAMPLES``: the number of bad samples the training loader
    skipped so far (its ``skipped``, see ``data.TrainLoader``) is the scalar ``skipped_samples``
    of the storage after each step, and is logged after training (this process's count)."""

    def _count(self) -> int | None:
        return getattr(getattr(self.trainer, "data_loader", None), "skipped", None)

    def after_step(self) -> None:
        count = self._count()
        if count is not None:
            self.trainer.storage.put_scalar("skipped_samples", count, smoothing_hint=False)

    def after_train(self) -> None:
        count = self._count()
        if count is not None:
            level = logging.WARNING if count else logging.INFO
            logger.log(level, "Skipped %d bad training samples (DATALOADER.SKIP_BAD_SAMPLES; "
                       "each named in a warning)", count)  # fmt: skip
