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

__all__ = ["PolyParamScheduler", "WarmupParamScheduler", "LRMultiplier"]


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
