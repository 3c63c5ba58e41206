"""The training loop: a trainer runs ``run_step`` between hook calls inside an EventStorage.

``SimpleTrainer`` does one plain optimisation step per iteration; ``AMPTrainer`` does it under
``torch.autocast``. Everything else (LR schedule, checkpoints, evaluation, logging) is a hook.

Losses reach the host every ``log_period`` iterations (``SOLVER.LOG_PERIOD``): a step keeps its
losses on the device, and one copy (one host sync) per period reads them all, checks them and
writes them to the storage at their own iterations. A host sync in every step would leave the GPU
idle while the next step is being queued. The checks that need the values (a non-finite loss
raises ``FloatingPointError``) run at that copy, before that iteration's optimizer step.
``DefaultTrainer`` also reads at every checkpoint iteration, and hooks that save or write call
``trainer.flush_metrics()`` first, so a diverged model never reaches disk. ``log_period=1`` reads
every step, as detectron2 does.

Stopping early (preemption): ``trainer.request_stop()`` (what the ``hooks.StopOnSignal`` handler
calls on SIGTERM / SIGUSR1) only sets a flag. One process stops after the current iteration. With
several processes the flag travels with the gather of the losses, so every process learns at the
same iteration (the next read of the losses) that some process asked, and the loop ends after
that step on all of them (``trainer.stopped``). ``DefaultTrainer`` then saves that iteration's
checkpoint and raises :class:`TrainingPreempted`; ``train_net.py`` exits with
:data:`PREEMPTED_EXIT_CODE`.
"""

from __future__ import annotations

import logging
import math
import signal
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

from ..solver.build import GradientClipper
from ..utils import comm
from ..utils.env import derived_seed, seed_all_rng
from ..utils.events import EventStorage, get_event_storage

__all__ = [
    "HookBase",
    "TrainerBase",
    "SimpleTrainer",
    "AMPTrainer",
    "PREEMPTED_EXIT_CODE",
    "PREEMPTION_SIGNALS",
    "TrainingPreempted",
    "restore_signal_handlers",
]

logger = logging.getLogger(__name__)

# sysexits.h's EX_TEMPFAIL ("temporary failure, try again later"): a preempted run is not an error
# (1), nor a usage error (2), nor a death by signal (128 + N, what a run killed before it could save
# reports), so a requeueing job script can tell "saved, resume me" from everything else.
PREEMPTED_EXIT_CODE = 75

# what schedulers send before killing a job (SLURM: SIGTERM at the end, SIGUSR1 via --signal)
PREEMPTION_SIGNALS: tuple[signal.Signals, ...] = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name)
)


def restore_signal_handlers(previous: Mapping[int, Any]) -> None:
    """Put back the handlers ``signal.signal`` returned when ours were installed; None (a handler
    not installed from Python, which cannot be put back) becomes the default."""
    for sig, handler in previous.items():
        signal.signal(sig, signal.SIG_DFL if handler is None else handler)


class TrainingPreempted(Exception):  # noqa: N818 (a stop on request, not an error)
    """Training stopped on request after iteration ``iteration`` (None in a launcher process that
    did not train), whose checkpoint ``checkpoint`` continues it with ``--resume``."""

    def __init__(self, iteration: int | None = None, checkpoint: str | None = None) -> None:
        where = f" after iteration {iteration}" if iteration is not None else ""
        saved = f"; resume from {checkpoint}" if checkpoint else ""
        super().__init__(f"Training stopped on request{where}{saved}")
        self.iteration = iteration
        self.checkpoint = checkpoint


class HookBase:
    """Something that runs at fixed points of training. ``self.trainer`` is set (as a weak
    proxy) by :meth:`TrainerBase.register_hooks`; ``trainer.iter`` is the current iteration and
    ``trainer.storage`` the open :class:`EventStorage`.

    Order of calls::

        hook.before_train()
        for iter in range(start_iter, max_iter):
            hook.before_step()
            trainer.run_step()
            hook.after_step()
            if a stop was requested (and agreed by every process): break  # iter stays
        else:
            iter += 1
        hook.after_train()   # also after an exception
    """

    trainer: TrainerBase

    def before_train(self) -> None:
        """Called once before the first iteration."""

    def after_train(self) -> None:
        """Called once after the last iteration, or after training stopped on an exception or on
        request (then ``trainer.iter < trainer.max_iter``; ``trainer.stopped`` on request)."""

    def before_step(self) -> None:
        """Called before each iteration."""

    def after_step(self) -> None:
        """Called after each iteration."""


class TrainerBase:
    """An iteration loop with hooks.

    Attributes:
        iter: the current iteration; equals ``max_iter`` once training completed.
        start_iter: the iteration training (re)started at.
        max_iter: training stops before this iteration.
        storage: the :class:`EventStorage` open during training.
        stop_requested: this process asked to stop (:meth:`request_stop`).
        stopped: training ended on request, after iteration ``iter`` (which completed).
    """

    def __init__(self) -> None:
        self._hooks: list[HookBase] = []
        self.iter = 0
        self.start_iter = 0
        self.max_iter = 0
        self.storage: EventStorage
        self.stop_requested = False
        self.stopped = False

    def register_hooks(self, hooks: Iterable[HookBase | None]) -> None:
        """Append hooks (``None`` entries are skipped); they run in registration order."""
        hooks = [h for h in hooks if h is not None]
        for h in hooks:
            if not isinstance(h, HookBase):
                raise TypeError(f"Hooks must be HookBase instances, got {type(h).__name__}")
            # A proxy avoids a reference cycle trainer -> hook -> trainer.
            h.trainer = weakref.proxy(self)
        self._hooks.extend(hooks)

    def train(self, start_iter: int, max_iter: int) -> None:
        """Run iterations ``start_iter .. max_iter - 1``."""
        logger.info("Starting training from iteration %d", start_iter)
        self.iter = self.start_iter = start_iter
        self.max_iter = max_iter
        with EventStorage(start_iter) as self.storage:
            try:
                self.before_train()
                for self.iter in range(start_iter, max_iter):
                    self.before_step()
                    self.run_step()
                    self.after_step()
                    if self.iter + 1 < max_iter and self.stop_agreed():
                        logger.info("Stopping on request after iteration %d", self.iter)
                        self.stopped = True
                        break
                else:
                    # iter == max_iter marks a completed run for the after_train hooks
                    self.iter = max(start_iter, max_iter)
            except Exception:
                logger.exception("Exception during training at iteration %d:", self.iter)
                raise
            finally:
                self.after_train()

    def request_stop(self) -> None:
        """Ask training to stop after the current iteration, saved. Only sets a flag, so a signal
        handler may call it."""
        self.stop_requested = True

    def stop_agreed(self) -> bool:
        """Whether some process had asked to stop by the iteration that just ran: the same answer
        on every process. Here one gather a step with several processes; ``SimpleTrainer``
        answers from the gather of its losses instead."""
        if comm.get_world_size() == 1:
            return self.stop_requested
        return any(comm.all_gather(self.stop_requested))

    def flush_metrics(self) -> None:
        """Write the metrics of iterations that ran but are not in the storage yet (and raise on
        a bad one). Hooks call it before they save or write; here there are none."""

    def before_train(self) -> None:
        for h in self._hooks:
            h.before_train()

    def after_train(self) -> None:
        self.storage.iter = self.iter
        for h in self._hooks:
            h.after_train()

    def before_step(self) -> None:
        self.storage.iter = self.iter
        for h in self._hooks:
            h.before_step()

    def after_step(self) -> None:
        for h in self._hooks:
            h.after_step()

    def run_step(self) -> None:
        raise NotImplementedError


def _as_loss_dict(losses: Mapping[str, torch.Tensor] | torch.Tensor) -> dict[str, torch.Tensor]:
    if isinstance(losses, torch.Tensor):
        return {"total_loss": losses}
    if not isinstance(losses, Mapping) or not losses:
        raise TypeError(
            "In training the model must return a non-empty dict of scalar losses, got "
            f"{type(losses).__name__}"
        )
    return dict(losses)


class SimpleTrainer(TrainerBase):
    """One optimisation step per iteration: load a batch, ``loss_dict = model(batch)``, sum,
    backward, optional gradient clipping, ``optimizer.step()``.

    Writes ``total_loss``, each loss (averaged over processes) and ``data_time`` (max over
    processes) to the storage, ``log_period`` iterations at a time (see the module docstring). A
    non-finite loss on any process raises ``FloatingPointError`` on every process when it is read,
    before that iteration's optimizer step, naming the iteration and the losses. The same gather
    carries each process's ``stop_requested``, which :meth:`stop_agreed` reports.
    """

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable[Any],
        optimizer: torch.optim.Optimizer,
        *,
        grad_clip: GradientClipper | None = None,
        log_period: int = 1,
    ) -> None:
        """
        Args:
            model: in training mode it takes a batch and returns ``{loss_name: scalar Tensor}``.
            data_loader: an iterable of batches, consumed forever (never exhausted).
            optimizer: steps the model's parameters.
            grad_clip: called with the optimizer's parameters after backward, before the step
                (see ``solver.build_gradient_clipper``).
            log_period: read the losses to the host after every ``log_period``-th iteration
                (and the last one); 1 = every iteration.
        """
        if log_period < 1:
            raise ValueError(f"SOLVER.LOG_PERIOD must be >= 1, got {log_period}")
        super().__init__()
        model.train()
        self.model = model
        self._data_loader = data_loader
        self._data_loader_iter_obj: Iterator[Any] | None = None
        self.optimizer = optimizer
        self.grad_clip = grad_clip
        self._stop_agreed = False
        # the losses are read after every iteration divisible by one of these (and the last)
        self.read_periods: tuple[int, ...] = (log_period,)
        # (iteration, loss names, their values on the device, data_time) not yet read
        self._pending: list[tuple[int, list[str], torch.Tensor, float]] = []
        # (iteration, {name: value}, data_time) read here, not yet gathered and written
        self._read: list[tuple[int, dict[str, float], float]] = []
        # when set, the random generators are seeded from (step_seed, rank, iteration) after each
        # batch is loaded, so the model's randomness (dropout, sampling) is a function of the
        # iteration and a resumed run repeats it
        self.step_seed: int | None = None

    def stop_agreed(self) -> bool:
        return self._stop_agreed

    @property
    def data_loader(self) -> Iterable[Any]:
        return self._data_loader

    @data_loader.setter
    def data_loader(self, data_loader: Iterable[Any]) -> None:
        """Train on another iterable of batches from the next step on."""
        self._data_loader = data_loader
        self._data_loader_iter_obj = None

    @property
    def _data_loader_iter(self) -> Iterator[Any]:
        if self._data_loader_iter_obj is None:
            self._data_loader_iter_obj = iter(self.data_loader)
        return self._data_loader_iter_obj

    def _trained_params(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def _autocast(self) -> AbstractContextManager[Any]:
        return nullcontext()

    def _backward(self, losses: torch.Tensor) -> None:
        losses.backward()

    def _clip_and_step(self) -> None:
        if self.grad_clip is not None:
            self.grad_clip(self._trained_params())
        self.optimizer.step()

    def run_step(self) -> None:
        if not self.model.training:
            raise RuntimeError("SimpleTrainer: the model was switched to eval mode")
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        if self.step_seed is not None:
            seed_all_rng(derived_seed(self.step_seed, comm.get_rank(), self.iter))

        with self._autocast():
            loss_dict = _as_loss_dict(self.model(data))
            losses = sum(loss_dict.values())
        self.optimizer.zero_grad(set_to_none=True)
        self._backward(losses)
        names = list(loss_dict)
        values = torch.stack([loss_dict[k].detach().float().reshape(()) for k in names])
        self._pending.append((self.iter, names, values, data_time))
        if self._read_due():
            self._read_local()
            self._gather_and_write()
        self._clip_and_step()

    def _read_due(self) -> bool:
        it = self.iter + 1
        if it >= self.max_iter or any(p > 0 and it % p == 0 for p in self.read_periods):
            return True
        # one process needs nobody's agreement to stop now
        return self.stop_requested and comm.get_world_size() == 1

    def flush_metrics(self) -> None:
        """Read this process's pending losses (one copy to the host) and raise if one is not
        finite; with one process also write them to the storage. With several, the gather and
        the write follow at the trainer's next read (every ``read_periods`` iteration), so a hook
        on the main process alone (writer, checkpointer) may call it."""
        self._read_local()
        if comm.get_world_size() == 1:
            self._gather_and_write()

    def _read_local(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        flat = torch.cat([values for _, _, values, _ in pending]).cpu().tolist()
        start = 0
        for it, names, _, data_time in pending:
            metrics = dict(zip(names, flat[start : start + len(names)]))
            start += len(names)
            self._read.append((it, metrics, data_time))
            if not all(math.isfinite(v) for v in metrics.values()):
                self._check_finite(it, {comm.get_rank(): metrics})

    def _gather_and_write(self) -> None:
        """Gather every process's read losses and stop request (all processes call it at the same
        iterations), raise on a non-finite loss anywhere, write the averages at their iterations."""
        local, self._read = self._read, []
        stop = self.stop_requested  # read once: a signal may set it during the gather
        # every rank sees every rank's losses and stop request
        gathered = comm.all_gather((local, stop))
        self._stop_agreed = any(s for _, s in gathered)
        storage = get_event_storage()
        for position, (it, _, _) in enumerate(local):
            all_metrics = [(entries[position][1], entries[position][2]) for entries, _ in gathered]
            self._check_finite(it, {rank: m for rank, (m, _) in enumerate(all_metrics)})
            names = list(all_metrics[0][0])
            reduced = {k: sum(m[k] for m, _ in all_metrics) / len(all_metrics) for k in names}
            if "total_loss" not in reduced:
                storage.put_scalar("total_loss", sum(reduced.values()), cur_iter=it)
            storage.put_scalars(**reduced, cur_iter=it)
            storage.put_scalar("data_time", max(t for _, t in all_metrics), cur_iter=it)

    @staticmethod
    def _check_finite(iteration: int, metrics_by_rank: Mapping[int, dict[str, float]]) -> None:
        bad = {
            rank: metrics
            for rank, metrics in metrics_by_rank.items()
            if not all(math.isfinite(v) for v in metrics.values())
        }
        if bad:
            raise FloatingPointError(
                f"Loss became infinite or NaN at iteration={iteration}!\n"
                f"loss_dict = {bad[min(bad)]} (rank {min(bad)}; non-finite on ranks {sorted(bad)})"
            )


class AMPTrainer(SimpleTrainer):
    """:class:`SimpleTrainer` with the forward pass under ``torch.autocast`` on the model's device
    type. float16 scales the loss with a ``torch.amp.GradScaler`` (gradients are unscaled before
    clipping); bfloat16 needs no scaler. The scaler's state is in ``state_dict()`` and is saved in
    checkpoints by ``DefaultTrainer``."""

    def __init__(
        self,
        model: nn.Module,
        data_loader: Iterable[Any],
        optimizer: torch.optim.Optimizer,
        *,
        grad_clip: GradientClipper | None = None,
        log_period: int = 1,
        precision: torch.dtype = torch.float16,
        grad_scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        """
        Args:
            precision: ``torch.float16`` or ``torch.bfloat16``.
            grad_scaler: scaler for float16 (default: a new ``GradScaler`` for the device);
                ignored for bfloat16.
        """
        if precision not in (torch.float16, torch.bfloat16):
            raise ValueError(f"AMP precision must be float16 or bfloat16, got {precision}")
        super().__init__(model, data_loader, optimizer, grad_clip=grad_clip, log_period=log_period)
        self.device_type = next(model.parameters()).device.type
        self.precision = precision
        if precision == torch.float16:
            self.grad_scaler: torch.amp.GradScaler | None = grad_scaler or torch.amp.GradScaler(
                self.device_type
            )
        else:
            self.grad_scaler = None

    def _autocast(self) -> AbstractContextManager[Any]:
        return torch.autocast(device_type=self.device_type, dtype=self.precision)

    def _backward(self, losses: torch.Tensor) -> None:
        if self.grad_scaler is None:
            losses.backward()
        else:
            self.grad_scaler.scale(losses).backward()

    def _clip_and_step(self) -> None:
        if self.grad_scaler is None:
            super()._clip_and_step()
            return
        if self.grad_clip is not None:
            self.grad_scaler.unscale_(self.optimizer)  # clip the true gradients
            self.grad_clip(self._trained_params())
        self.grad_scaler.step(self.optimizer)  # skipped when gradients are inf / NaN
        self.grad_scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return {"grad_scaler": self.grad_scaler.state_dict()} if self.grad_scaler else {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        if self.grad_scaler is not None and "grad_scaler" in state_dict:
            self.grad_scaler.load_state_dict(state_dict["grad_scaler"])
