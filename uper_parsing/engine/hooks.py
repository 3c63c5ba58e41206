"""Hooks: timing, LR scheduling, checkpointing, evaluation, metric writing, stopping on signals."""

from __future__ import annotations

import datetime
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from fvcore.common.timer import Timer

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
    "StopOnSignal",
    "SkippedSamples",
    "flatten_results_dict",
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
        next_iter = self.trainer.iter + 1
        # the evaluation after the last iteration happens in after_train
        if (
            self._period > 0
            and next_iter % self._period == 0
            and next_iter != self.trainer.max_iter
        ):
            self._do_eval()

    def after_train(self) -> None:
        if self.trainer.iter >= self.trainer.max_iter:  # not after a failed run
            self._do_eval()


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
