"""Training metrics: the ``EventStorage`` hooks write into, and the writers that read it.

The trainer opens an :class:`EventStorage` around the training loop; anything running inside it
(model, hooks) can record scalars with ``get_event_storage().put_scalar(...)``. Writers
(:class:`JSONWriter`, :class:`TensorboardXWriter`, :class:`CommonMetricPrinter`) are called
periodically by the ``PeriodicWriter`` hook and turn the latest values into files and log lines.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import time
from collections import defaultdict
from contextlib import suppress
from typing import Any

import torch
from fvcore.common.history_buffer import HistoryBuffer

__all__ = [
    "EventStorage",
    "get_event_storage",
    "EventWriter",
    "JSONWriter",
    "TensorboardXWriter",
    "CommonMetricPrinter",
]

_CURRENT_STORAGE_STACK: list[EventStorage] = []


def get_event_storage() -> EventStorage:
    """The innermost :class:`EventStorage` currently open (the trainer opens one in ``train``)."""
    if not _CURRENT_STORAGE_STACK:
        raise RuntimeError(
            "get_event_storage() has to be called inside a 'with EventStorage(...)' context "
            "(the trainer opens one around training)."
        )
    return _CURRENT_STORAGE_STACK[-1]


class EventStorage:
    """Scalar histories keyed by name, stamped with the current iteration.

    Use as a context manager so that :func:`get_event_storage` finds it.
    """

    def __init__(self, start_iter: int = 0) -> None:
        self._history: defaultdict[str, HistoryBuffer] = defaultdict(HistoryBuffer)
        self._smoothing_hints: dict[str, bool] = {}
        self._latest_scalars: dict[str, tuple[float, int]] = {}
        self._iter = start_iter

    def put_scalar(
        self,
        name: str,
        value: float | torch.Tensor,
        smoothing_hint: bool = True,
        cur_iter: int | None = None,
    ) -> None:
        """Record ``value`` under ``name`` at ``cur_iter`` (default: the current iteration).

        Args:
            smoothing_hint: whether writers should report a windowed median (losses, timings)
                rather than the latest value (learning rate, evaluation metrics).
        """
        cur_iter = self._iter if cur_iter is None else int(cur_iter)
        value = float(value)
        self._history[name].update(value, cur_iter)
        self._latest_scalars[name] = (value, cur_iter)
        existing_hint = self._smoothing_hints.get(name)
        if existing_hint is not None and existing_hint != smoothing_hint:
            raise ValueError(f"Scalar {name} was put with a different smoothing_hint before")
        self._smoothing_hints[name] = smoothing_hint

    def put_scalars(
        self, *, smoothing_hint: bool = True, cur_iter: int | None = None, **kwargs: float
    ) -> None:
        """``put_scalar`` for each keyword argument: ``storage.put_scalars(loss=1.0, acc=0.5)``."""
        for name, value in kwargs.items():
            self.put_scalar(name, value, smoothing_hint=smoothing_hint, cur_iter=cur_iter)

    def history(self, name: str) -> HistoryBuffer:
        """The full history of scalar ``name``; raises ``KeyError`` if it was never put."""
        if name not in self._history:
            raise KeyError(f"No history metric available for {name}!")
        return self._history[name]

    def histories(self) -> dict[str, HistoryBuffer]:
        return dict(self._history)

    def latest(self) -> dict[str, tuple[float, int]]:
        """``{name: (latest value, iteration it was put at)}`` for every scalar."""
        return dict(self._latest_scalars)

    def latest_with_smoothing_hint(self, window_size: int = 20) -> dict[str, tuple[float, int]]:
        """Like :meth:`latest`, but scalars put with ``smoothing_hint`` report the median of
        their last ``window_size`` values."""
        result = {}
        for name, (value, itr) in self._latest_scalars.items():
            if self._smoothing_hints[name]:
                value = self._history[name].median(window_size)
            result[name] = (value, itr)
        return result

    def step(self) -> None:
        """Advance the iteration counter by one."""
        self._iter += 1

    @property
    def iter(self) -> int:
        """The iteration that new scalars are stamped with."""
        return self._iter

    @iter.setter
    def iter(self, value: int) -> None:
        self._iter = int(value)

    def __enter__(self) -> EventStorage:
        _CURRENT_STORAGE_STACK.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        assert _CURRENT_STORAGE_STACK[-1] is self
        _CURRENT_STORAGE_STACK.pop()


class EventWriter:
    """Base of the writers: ``write()`` reads the current storage, ``close()`` releases files."""

    def write(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class JSONWriter(EventWriter):
    """Append scalars to a JSON-lines file, one line per iteration that has new values.

    Each line is ``{"iteration": N, name: value, ...}``; smoothed scalars are written as the
    median of their last ``window_size`` values. Read it back with
    ``[json.loads(line) for line in open(path)]``.
    """

    def __init__(self, json_file: str, window_size: int = 20) -> None:
        self._path = json_file
        self._file: Any = None
        self._window_size = window_size
        self._last_write = -1

    def write(self) -> None:
        storage = get_event_storage()
        by_iter: defaultdict[int, dict[str, float]] = defaultdict(dict)
        for name, (value, itr) in storage.latest_with_smoothing_hint(self._window_size).items():
            if itr > self._last_write:  # only what is new since the previous write
                by_iter[itr][name] = value
        if not by_iter:
            return
        if self._file is None:
            os.makedirs(os.path.dirname(os.path.abspath(self._path)), exist_ok=True)
            self._file = open(self._path, "a", encoding="utf-8")  # noqa: SIM115
        for itr in sorted(by_iter):
            self._file.write(json.dumps({"iteration": itr, **by_iter[itr]}, sort_keys=True) + "\n")
        self._file.flush()
        with suppress(OSError):
            os.fsync(self._file.fileno())
        self._last_write = max(by_iter)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class TensorboardXWriter(EventWriter):
    """Write scalars to TensorBoard event files in ``log_dir``."""

    def __init__(self, log_dir: str, window_size: int = 20, **kwargs: Any) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._window_size = window_size
        self._writer = SummaryWriter(log_dir, **kwargs)
        self._last_write = -1

    def write(self) -> None:
        storage = get_event_storage()
        new_last_write = self._last_write
        for name, (value, itr) in storage.latest_with_smoothing_hint(self._window_size).items():
            if itr > self._last_write:
                self._writer.add_scalar(name, value, itr)
                new_last_write = max(new_last_write, itr)
        self._last_write = new_last_write
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class CommonMetricPrinter(EventWriter):
    """Log a one-line training summary: ETA, iteration, losses (median of the last 20), time per
    iteration, data time, learning rate and peak CUDA memory.

    Writes nothing once ``storage.iter == max_iter`` (after training it has nothing new to say).
    """

    def __init__(self, max_iter: int | None = None, window_size: int = 20) -> None:
        self.logger = logging.getLogger("uper_parsing.utils.events")
        self._max_iter = max_iter
        self._window_size = window_size
        self._last_write: tuple[int, float] | None = None  # (iteration, time) for a rough ETA

    def _eta(self, storage: EventStorage) -> str | None:
        if self._max_iter is None:
            return None
        iteration = storage.iter
        remaining = self._max_iter - iteration - 1
        try:
            eta_seconds = storage.history("time").median(1000) * remaining
            storage.put_scalar("eta_seconds", eta_seconds, smoothing_hint=False)
            return str(datetime.timedelta(seconds=int(eta_seconds)))
        except KeyError:  # no IterationTimer: estimate from the time between writes
            eta = None
            if self._last_write is not None and iteration > self._last_write[0]:
                per_iter = (time.perf_counter() - self._last_write[1]) / (
                    iteration - self._last_write[0]
                )
                eta = str(datetime.timedelta(seconds=int(per_iter * remaining)))
            self._last_write = (iteration, time.perf_counter())
            return eta

    def _avg(self, storage: EventStorage, name: str) -> float | None:
        try:
            return storage.history(name).avg(self._window_size)
        except KeyError:
            return None

    def write(self) -> None:
        storage = get_event_storage()
        iteration = storage.iter
        if iteration == self._max_iter:
            return
        parts = []
        eta = self._eta(storage)
        if eta is not None:
            parts.append(f"eta: {eta}")
        parts.append(f"iter: {iteration}")
        for name, history in storage.histories().items():
            if "loss" in name:
                parts.append(f"{name}: {history.median(self._window_size):.4g}")
        iter_time = self._avg(storage, "time")
        if iter_time is not None:
            parts.append(f"time: {iter_time:.4f}")
        data_time = self._avg(storage, "data_time")
        if data_time is not None:
            parts.append(f"data_time: {data_time:.4f}")
        with suppress(KeyError):
            parts.append(f"lr: {storage.history('lr').latest():.5g}")
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            max_mem_mb = torch.cuda.max_memory_allocated() / 1024.0 / 1024.0
            torch.cuda.reset_peak_memory_stats()
            parts.append(f"max_mem: {max_mem_mb:.0f}M")
        self.logger.info("  ".join(parts))
