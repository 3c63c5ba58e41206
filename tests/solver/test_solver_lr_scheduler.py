"""build_lr_scheduler against closed-form learning rates."""

import math

import pytest
import torch

from uper_parsing.config import get_cfg
from uper_parsing.solver import build_lr_scheduler

BASE_LR = 0.01
MAX_ITER = 100


def _cfg(name, **solver):
    cfg = get_cfg()
    cfg.SOLVER.LR_SCHEDULER_NAME = name
    cfg.SOLVER.BASE_LR = BASE_LR
    cfg.SOLVER.MAX_ITER = MAX_ITER
    cfg.SOLVER.WARMUP_ITERS = 0
    for key, value in solver.items():
        cfg.SOLVER[key] = value
    return cfg


def _lrs(cfg, backbone_multiplier=1.0):
    """lr of each group at the start of iterations 0..MAX_ITER (the last after the final step)."""
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD(
        [{"params": params[:1]}, {"params": params[1:], "lr": BASE_LR * backbone_multiplier}],
        lr=BASE_LR,
    )
    scheduler = build_lr_scheduler(cfg, optimizer)
    head, backbone = [], []
    for _ in range(MAX_ITER + 1):
        head.append(optimizer.param_groups[0]["lr"])
        backbone.append(optimizer.param_groups[1]["lr"])
        optimizer.step()
        scheduler.step()
    return head, backbone


def test_warmup_poly():
    cfg = _cfg(
        "WarmupPolyLR",
        WARMUP_ITERS=10,
        WARMUP_FACTOR=0.1,
        POLY_LR_POWER=0.9,
        BASE_LR_END=1e-4,
    )
    lrs, backbone = _lrs(cfg, backbone_multiplier=0.1)
    end = 1e-4 / BASE_LR

    def poly(t):
        return BASE_LR * (end + (1 - end) * (1 - t) ** 0.9)

    assert lrs[0] == pytest.approx(BASE_LR * 0.1)  # warmup starts at BASE_LR * WARMUP_FACTOR
    # linear warmup towards the poly value at its end
    assert lrs[5] == pytest.approx(BASE_LR * 0.1 + 0.5 * (poly(0.1) - BASE_LR * 0.1))
    assert lrs[10] == pytest.approx(poly(0.1))
    assert lrs[50] == pytest.approx(poly(0.5))  # midpoint
    assert lrs[50] == pytest.approx(1e-4 + (BASE_LR - 1e-4) * 0.5**0.9)
    assert lrs[99] == pytest.approx(poly(0.99))
    assert lrs[100] == pytest.approx(1e-4)  # end value
    assert backbone[50] == pytest.approx(0.1 * lrs[50])  # multiplier carried through


def test_poly_without_warmup_or_end():
    lrs, _ = _lrs(_cfg("WarmupPolyLR", POLY_LR_POWER=1.0, BASE_LR_END=0.0))
    assert lrs[0] == pytest.approx(BASE_LR)
    assert lrs[25] == pytest.approx(BASE_LR * 0.75)
    assert lrs[100] == pytest.approx(0.0)


def test_cosine():
    lrs, _ = _lrs(_cfg("WarmupCosineLR", BASE_LR_END=0.0))
    for it in (0, 30, 50, 90):
        expected = BASE_LR * 0.5 * (1 + math.cos(math.pi * it / MAX_ITER))
        assert lrs[it] == pytest.approx(expected, abs=1e-12)
    assert lrs[50] == pytest.approx(BASE_LR / 2)


def test_multistep_with_constant_warmup():
    cfg = _cfg(
        "WarmupMultiStepLR",
        STEPS=(30, 60, 200),  # 200 >= MAX_ITER: ignored
        GAMMA=0.1,
        WARMUP_ITERS=10,
        WARMUP_FACTOR=0.5,
        WARMUP_METHOD="constant",
    )
    lrs, _ = _lrs(cfg)
    assert lrs[0] == lrs[9] == pytest.approx(BASE_LR * 0.5)
    assert lrs[10] == lrs[29] == pytest.approx(BASE_LR)
    assert lrs[30] == lrs[59] == pytest.approx(BASE_LR * 0.1)
    assert lrs[60] == lrs[99] == pytest.approx(BASE_LR * 0.01)


def test_state_dict_round_trip():
    cfg = _cfg("WarmupPolyLR", WARMUP_ITERS=10, WARMUP_FACTOR=0.1)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=BASE_LR)
    scheduler = build_lr_scheduler(cfg, optimizer)
    for _ in range(17):
        optimizer.step()
        scheduler.step()
    state, opt_state = scheduler.state_dict(), optimizer.state_dict()
    assert state == {"base_lrs": [BASE_LR], "last_epoch": 17}

    param2 = torch.nn.Parameter(torch.zeros(1))
    optimizer2 = torch.optim.SGD([param2], lr=BASE_LR)
    scheduler2 = build_lr_scheduler(cfg, optimizer2)
    optimizer2.load_state_dict(opt_state)
    scheduler2.load_state_dict(state)
    assert scheduler2.get_last_lr() == scheduler.get_last_lr()
    optimizer.step(), scheduler.step(), optimizer2.step(), scheduler2.step()
    assert optimizer2.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


def test_unknown_schedule_and_warmup():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE_LR)
    with pytest.raises(ValueError, match="LR_SCHEDULER_NAME"):
        build_lr_scheduler(_cfg("StepLR"), optimizer)
    with pytest.raises(ValueError, match="warmup method"):
        build_lr_scheduler(_cfg("WarmupPolyLR", WARMUP_ITERS=5, WARMUP_METHOD="exp"), optimizer)
