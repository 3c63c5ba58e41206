"""SOLVER.SCHEDULE_STYLE "mmengine" against a step-by-step simulation of mmengine's chained
LinearLR + PolyLR (iteration-based), written from mmengine's _ParamScheduler.step and the
schedulers' chainable _get_value."""

import pytest
import torch

from uper_parsing.config import get_cfg
from uper_parsing.solver import build_lr_scheduler


class _MMEngineScheduler:
    """One mmengine param scheduler over [begin, end); ``total_iters = end - begin - 1``."""

    def __init__(self, value_fn, begin: int, end: int) -> None:
        self.value_fn, self.begin, self.end = value_fn, begin, end
        self.total_iters = end - begin - 1
        self.global_step, self.last_step = -1, -1

    def step(self, lr: float) -> float:
        self.global_step += 1
        if self.begin <= self.global_step < self.end:
            self.last_step += 1
            return self.value_fn(self, lr)
        return lr


def _linear(start_factor: float, end_factor: float = 1.0):
    def value(s: _MMEngineScheduler, lr: float) -> float:
        if s.last_step == 0:
            return lr * start_factor
        delta = end_factor - start_factor
        return lr * (1.0 + delta / (s.total_iters * start_factor + (s.last_step - 1) * delta))

    return value


def _poly(eta_min: float, power: float):
    def value(s: _MMEngineScheduler, lr: float) -> float:
        if s.last_step == 0:
            return lr
        return (lr - eta_min) * (1 - 1 / (s.total_iters - s.last_step + 1)) ** power + eta_min

    return value


def mmengine_lrs(base_lr, *, warmup_iters, start_factor, power, eta_min, max_iter):
    """The lr of each iteration 0..max_iter-1: schedulers step once at construction, then once
    after every iteration (ParamSchedulerHook), in config order."""
    schedulers = []
    if warmup_iters:
        schedulers.append(_MMEngineScheduler(_linear(start_factor), 0, warmup_iters))
    schedulers.append(_MMEngineScheduler(_poly(eta_min, power), warmup_iters, max_iter))
    lr = base_lr
    for s in schedulers:  # each constructor calls step()
        lr = s.step(lr)
    lrs = []
    for _ in range(max_iter):
        lrs.append(lr)
        for s in schedulers:
            lr = s.step(lr)
    return lrs


def _ours(base_lr, *, warmup_iters, start_factor, power, eta_min, max_iter, group_scale=1.0):
    cfg = get_cfg()
    cfg.SOLVER.SCHEDULE_STYLE = "mmengine"
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupPolyLR"
    cfg.SOLVER.BASE_LR = base_lr
    cfg.SOLVER.BASE_LR_END = eta_min
    cfg.SOLVER.POLY_LR_POWER = power
    cfg.SOLVER.WARMUP_ITERS = warmup_iters
    cfg.SOLVER.WARMUP_FACTOR = start_factor
    cfg.SOLVER.MAX_ITER = max_iter
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [param], "lr": base_lr * group_scale}], lr=base_lr)
    scheduler = build_lr_scheduler(cfg, optimizer)
    lrs = []
    for _ in range(max_iter):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize(
    "recipe",
    [
        # schedule_160k (R50 recipes): PolyLR power 0.9 to 1e-4, no warmup
        dict(base_lr=0.01, warmup_iters=0, start_factor=1.0, power=0.9, eta_min=1e-4),
        # ConvNeXt / Swin recipes: LinearLR from 1e-6 over 1500 its, PolyLR power 1.0 to 0
        dict(base_lr=1e-4, warmup_iters=15, start_factor=1e-6, power=1.0, eta_min=0.0),
        dict(base_lr=0.01, warmup_iters=2, start_factor=0.1, power=0.9, eta_min=1e-4),
    ],
)
def test_schedule_equals_mmengine_chain(recipe):
    max_iter = 160
    reference = mmengine_lrs(**recipe, max_iter=max_iter)
    ours = _ours(**recipe, max_iter=max_iter)
    assert ours == pytest.approx(reference, rel=1e-9, abs=1e-15)
    assert reference[-1] == pytest.approx(recipe["eta_min"], abs=1e-15)  # last iteration
    warmup = recipe["warmup_iters"]
    if warmup:
        assert reference[warmup - 1] == reference[warmup] == pytest.approx(recipe["base_lr"])


def test_layer_decay_groups_scale_with_a_zero_end():
    recipe = dict(warmup_iters=15, start_factor=1e-6, power=1.0, eta_min=0.0, max_iter=160)
    scaled = _ours(1e-4, **recipe, group_scale=0.9**4)
    reference = mmengine_lrs(1e-4 * 0.9**4, **recipe)
    assert scaled == pytest.approx(reference, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("LR_SCHEDULER_NAME", "WarmupCosineLR", "SOLVER.LR_SCHEDULER_NAME must be 'WarmupPolyLR'"),
        ("WARMUP_METHOD", "constant", "SOLVER.WARMUP_METHOD must be 'linear'"),
        ("SCHEDULE_STYLE", "mmseg", "Unknown SOLVER.SCHEDULE_STYLE 'mmseg'"),
    ],
)
def test_errors_name_the_key(key, value, message):
    cfg = get_cfg()
    cfg.SOLVER.SCHEDULE_STYLE = "mmengine"
    cfg.SOLVER.WARMUP_ITERS = 10
    cfg.SOLVER[key] = value
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match=message):
        build_lr_scheduler(cfg, optimizer)
