"""Learning-rate schedules as fvcore param schedulers over training progress in [0, 1].

A schedule is a multiplier ``f(where)`` of each parameter group's base learning rate, where
``where = iteration / max_iter``; :class:`LRMultiplier` applies it to an optimizer as a regular
``torch.optim.lr_scheduler.LRScheduler`` stepped once per iteration.
"""

from __future__ import annotations

from typing import Any

import torch
from fvcore.common.param_scheduler import (
    CompositeParamScheduler,
    ConstantParamScheduler,
    LinearParamScheduler,
    ParamScheduler,
)

__all__ = [
    "PolyParamScheduler",
    "WarmupParamScheduler",
    "MMEngineWarmupPolyScheduler",
    "LRMultiplier",
]


class PolyParamScheduler(ParamScheduler):
    """Polynomial decay from ``start_value`` to ``end_value`` (mmseg's ``PolyLR``):

    ``value(where) = end_value + (start_value - end_value) * (1 - where) ** power``
    """

    def __init__(self, start_value: float, end_value: float, power: float) -> None:
        self._start_value = start_value
        self._end_value = end_value
        self._power = power

    def __call__(self, where: float) -> float:
        remaining = min(max(1.0 - where, 0.0), 1.0)
        return self._end_value + (self._start_value - self._end_value) * remaining**self._power


class WarmupParamScheduler(CompositeParamScheduler):
    """``scheduler`` preceded by a warmup over the first ``warmup_length`` fraction of training.

    The warmup starts at ``warmup_factor * scheduler(0)`` and, for "linear", rises to the value
    ``scheduler`` has at the end of the warmup; "constant" holds the start value. After the
    warmup the main schedule continues un-rescaled (its value at ``where`` is ``scheduler(where)``).
    """

    def __init__(
        self,
        scheduler: ParamScheduler,
        warmup_factor: float,
        warmup_length: float,
        warmup_method: str = "linear",
    ) -> None:
        start_value = warmup_factor * scheduler(0.0)
        if warmup_method == "constant":
            warmup: ParamScheduler = ConstantParamScheduler(start_value)
        elif warmup_method == "linear":
            warmup = LinearParamScheduler(start_value, scheduler(warmup_length))
        else:
            raise ValueError(
                f"Unknown warmup method '{warmup_method}'; expected 'linear' or 'constant'"
            )
        super().__init__(
            [warmup, scheduler],
            lengths=[warmup_length, 1.0 - warmup_length],
            interval_scaling=["rescaled", "fixed"],
        )


class MMEngineWarmupPolyScheduler(ParamScheduler):
    """mmseg's iteration-based chain ``LinearLR(start_factor=warmup_factor, begin=0,
    end=warmup_iters)`` then ``PolyLR(eta_min=end_value, power, begin=warmup_iters,
    end=max_iter)``, as a multiplier of the base lr (``warmup_iters = 0``: the poly alone).

    Each mmengine scheduler spans ``end - begin - 1`` steps, so at iteration t (``where =
    t / max_iter``) the value is ``warmup_factor + (1 - warmup_factor) * t / (W - 1)`` for t < W
    (1 at t = W - 1), then ``end_value + (1 - end_value) * (1 - (t - W) / (T - W - 1)) ** power``
    (``end_value`` at the last iteration t = T - 1).
    """

    def __init__(
        self,
        *,
        end_value: float,
        power: float,
        warmup_factor: float,
        warmup_iters: int,
        max_iter: int,
    ) -> None:
        if not 0 <= warmup_iters < max_iter:
            raise ValueError(f"warmup_iters {warmup_iters} must be in [0, max_iter {max_iter})")
        self._poly = PolyParamScheduler(1.0, end_value, power)
        self._warmup_factor = warmup_factor
        self._warmup_iters = warmup_iters
        self._max_iter = max_iter

    def _warmup(self, iteration: int) -> float:
        steps = self._warmup_iters - 1
        if steps == 0:
            return self._warmup_factor
        return self._warmup_factor + (1.0 - self._warmup_factor) * iteration / steps

    def __call__(self, where: float) -> float:
        iteration = round(where * self._max_iter)
        if iteration < self._warmup_iters:
            return self._warmup(iteration)
        steps = self._max_iter - self._warmup_iters - 1
        if steps <= 0:
            return 1.0
        return self._poly(min((iteration - self._warmup_iters) / steps, 1.0))


class LRMultiplier(torch.optim.lr_scheduler.LRScheduler):
    """Set each group's lr to ``base_lr * multiplier(iteration / max_iter)``.

    ``base_lr`` is the group's ``initial_lr`` (its lr when the scheduler was created, so a
    backbone multiplier carries through). Construction applies iteration 0; each ``step()``
    (once per iteration, after ``optimizer.step()``) moves to the next iteration.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        multiplier: ParamScheduler,
        max_iter: int,
        last_iter: int = -1,
    ) -> None:
        if max_iter <= 0:
            raise ValueError(f"max_iter must be positive, got {max_iter}")
        self._multiplier = multiplier
        self._max_iter = max_iter
        super().__init__(optimizer, last_epoch=last_iter)

    def get_lr(self) -> list[float]:
        factor = self._multiplier(min(self.last_epoch / self._max_iter, 1.0))
        return [base_lr * factor for base_lr in self.base_lrs]

    def state_dict(self) -> dict[str, Any]:
        # The multiplier is rebuilt from the config, so only the position is state.
        return {"base_lrs": list(self.base_lrs), "last_epoch": self.last_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base_lrs = list(state_dict["base_lrs"])
        self.last_epoch = int(state_dict["last_epoch"])
        self._last_lr = self.get_lr()
