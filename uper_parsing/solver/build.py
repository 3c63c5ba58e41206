"""Optimizer, learning-rate schedule and gradient clipping built from ``cfg.SOLVER``."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

import torch
from fvcore.common.param_scheduler import (
    CosineParamScheduler,
    MultiStepParamScheduler,
    ParamScheduler,
)
from torch import nn

from ..config import UnsupportedKey, reject_unsupported_keys
from ..utils import comm
from .layer_decay import LayerDecay, WeightDecayOverrides
from .lr_scheduler import (
    LRMultiplier,
    MMEngineWarmupPolyScheduler,
    PolyParamScheduler,
    WarmupParamScheduler,
)

__all__ = [
    "get_default_optimizer_params",
    "build_optimizer",
    "build_lr_multiplier",
    "build_lr_scheduler",
    "build_gradient_clipper",
    "GradientClipper",
]

logger = logging.getLogger(__name__)

# Modules whose own parameters are normalisation parameters (FrozenBatchNorm has buffers only).
_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,  # BatchNorm1d/2d/3d, SyncBatchNorm, InstanceNorm*
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)

_NORM_NAME = re.compile(r"Norm(\d+d)?$")

GradientClipper = Callable[[Iterable[torch.Tensor]], Any]

# Keys an optimizer / a schedule does not read, rejected by name when set (docs/ARCHITECTURE.md,
# "Keys a model rejects"). SOLVER.STEPS is not among them: configs that switch a detectron2 recipe
# to a poly schedule inherit its steps (configs/quickstart/panoptic_fpn_R18_synthetic.yaml).
_POLY_POWER = UnsupportedKey("SOLVER.POLY_LR_POWER", "a poly exponent")
_GAMMA = UnsupportedKey("SOLVER.GAMMA", "a step factor")
_UNUSED_BY_OPTIMIZER = {
    "SGD": (UnsupportedKey("SOLVER.BETAS", "Adam's betas (it takes SOLVER.MOMENTUM)"),),
    "AdamW": (
        UnsupportedKey("SOLVER.MOMENTUM", "SGD momentum (it takes SOLVER.BETAS)"),
        UnsupportedKey("SOLVER.NESTEROV", "Nesterov momentum"),
    ),
}
_UNUSED_BY_SCHEDULE = {
    "WarmupPolyLR": (_GAMMA,),
    "WarmupCosineLR": (_POLY_POWER, _GAMMA),
    "WarmupMultiStepLR": (
        _POLY_POWER,
        UnsupportedKey("SOLVER.BASE_LR_END", "an end learning rate (it steps by SOLVER.GAMMA)"),
    ),
}


def _is_norm(module: nn.Module) -> bool:
    # The name test catches norms defined elsewhere (e.g. a LayerNorm2d of a ConvNeXt backbone).
    return isinstance(module, _NORM_TYPES) or bool(_NORM_NAME.search(type(module).__name__))


def get_default_optimizer_params(
    model: nn.Module,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float,
    weight_decay_bias: float,
    backbone_multiplier: float = 1.0,
    *,
    layer_decay: LayerDecay | None = None,
    weight_decay_overrides: WeightDecayOverrides | None = None,
) -> list[dict[str, Any]]:
    """Parameter groups with per-kind weight decay and a backbone learning-rate factor.

    - parameters of normalisation layers: ``weight_decay_norm``;
    - other biases: ``weight_decay_bias``; everything else: ``weight_decay``;
    - with ``layer_decay``, instead: ``LayerDecay.weight_decay`` (mmseg's rule), and the lr
      times the parameter's ``lr_scale``;
    - ``weight_decay_overrides`` (by name) win over both;
    - parameters under ``model.backbone``: ``lr = base_lr * backbone_multiplier``;
    - frozen parameters (``requires_grad=False``) are left out; shared parameters appear once.

    Returns one group per distinct (lr, weight_decay), each ``{"params", "lr", "weight_decay"}``.
    """
    model = comm.unwrap_model(model)
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        in_backbone = module_name == "backbone" or module_name.startswith("backbone.")
        is_norm = _is_norm(module)
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            name = f"{module_name}.{param_name}" if module_name else param_name
            lr = base_lr * backbone_multiplier if in_backbone else base_lr
            if layer_decay is not None:
                decay = layer_decay.weight_decay(name, param, weight_decay)
                lr *= layer_decay.lr_scale(name)
            elif is_norm:
                decay = weight_decay_norm
            elif param_name == "bias":
                decay = weight_decay_bias
            else:
                decay = weight_decay
            override = weight_decay_overrides.lookup(name) if weight_decay_overrides else None
            decay = decay if override is None else override
            groups.setdefault((lr, decay), []).append(param)
    return [
        {"params": params, "lr": lr, "weight_decay": decay}
        for (lr, decay), params in groups.items()
    ]


def _layer_decay(solver: Any, model: nn.Module) -> LayerDecay | None:
    """``SOLVER.LAYER_DECAY`` for ``model``, or None when disabled; an error names the keys
    that its weight-decay rule leaves unused when they are set."""
    node = solver.LAYER_DECAY
    if not node.ENABLED:
        return None
    if solver.WEIGHT_DECAY_NORM != 0.0 or solver.WEIGHT_DECAY_BIAS != 0.0:
        raise ValueError(
            "SOLVER.LAYER_DECAY.ENABLED gives norms and biases no weight decay (mmseg's rule); "
            "set SOLVER.WEIGHT_DECAY_NORM and SOLVER.WEIGHT_DECAY_BIAS to 0.0, not "
            f"{solver.WEIGHT_DECAY_NORM} and {solver.WEIGHT_DECAY_BIAS}"
        )
    model = comm.unwrap_model(model)
    return LayerDecay.for_model(
        model, decay_type=node.TYPE, rate=node.RATE, num_layers=node.NUM_LAYERS
    )


def build_optimizer(cfg: Any, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (``SOLVER.MOMENTUM``, ``SOLVER.NESTEROV``) or AdamW (``SOLVER.BETAS``) over the
    parameter groups of :func:`get_default_optimizer_params` (with ``SOLVER.LAYER_DECAY`` and
    ``SOLVER.WEIGHT_DECAY_OVERRIDES``); the other optimizer's keys must keep their defaults."""
    solver = cfg.SOLVER
    owner = f"SOLVER.OPTIMIZER {solver.OPTIMIZER!r}"
    reject_unsupported_keys(cfg, owner, _UNUSED_BY_OPTIMIZER.get(solver.OPTIMIZER, ()))
    params = get_default_optimizer_params(
        model,
        base_lr=solver.BASE_LR,
        weight_decay=solver.WEIGHT_DECAY,
        weight_decay_norm=solver.WEIGHT_DECAY_NORM,
        weight_decay_bias=(
            solver.WEIGHT_DECAY if solver.WEIGHT_DECAY_BIAS is None else solver.WEIGHT_DECAY_BIAS
        ),
        backbone_multiplier=solver.BACKBONE_MULTIPLIER,
        layer_decay=_layer_decay(solver, model),
        weight_decay_overrides=WeightDecayOverrides.parse(solver.WEIGHT_DECAY_OVERRIDES),
    )
    if not params:
        raise ValueError("The model has no trainable parameters (all have requires_grad=False)")
    name = solver.OPTIMIZER
    # fused=None is torch's default (foreach where it can); SOLVER.FUSED asks for the fused
    # kernels, on CUDA and on the CPU (where fused AdamW's step is several times faster than
    # torch's default, docs/BENCHMARKS.md). Not with float16 AMP:
    # torch's fused SGD allocates its momentum buffers uninitialised (empty_like) at the first
    # step and leaves them so when the grad scaler skips that step for inf gradients (the usual
    # first steps at scale 65536): the next update reads garbage (docs/ARCHITECTURE.md).
    devices = {p.device.type for group in params for p in group["params"]}
    scaled = cfg.SOLVER.AMP.ENABLED and cfg.SOLVER.AMP.DTYPE == "float16"
    fused = True if solver.FUSED and devices <= {"cuda", "cpu"} and not scaled else None
    if name == "SGD":
        return torch.optim.SGD(
            params,
            lr=solver.BASE_LR,
            momentum=solver.MOMENTUM,
            nesterov=solver.NESTEROV,
            weight_decay=solver.WEIGHT_DECAY,
            fused=fused,
        )
    if name == "AdamW":
        return torch.optim.AdamW(
            params,
            lr=solver.BASE_LR,
            betas=tuple(solver.BETAS),
            weight_decay=solver.WEIGHT_DECAY,
            fused=fused,
        )
    raise ValueError(f"Unknown SOLVER.OPTIMIZER '{name}'; expected 'SGD' or 'AdamW'")


def _mmengine_multiplier(solver: Any) -> ParamScheduler:
    """``SOLVER.SCHEDULE_STYLE`` "mmengine": mmseg's LinearLR + PolyLR chain; an error names
    the keys it cannot follow."""
    if solver.LR_SCHEDULER_NAME != "WarmupPolyLR":
        raise ValueError(
            "SOLVER.SCHEDULE_STYLE 'mmengine' follows mmseg's PolyLR: SOLVER.LR_SCHEDULER_NAME "
            f"must be 'WarmupPolyLR', not {solver.LR_SCHEDULER_NAME!r}"
        )
    if solver.WARMUP_ITERS > 0 and solver.WARMUP_METHOD != "linear":
        raise ValueError(
            "SOLVER.SCHEDULE_STYLE 'mmengine' follows mmseg's LinearLR warmup: "
            f"SOLVER.WARMUP_METHOD must be 'linear', not {solver.WARMUP_METHOD!r}"
        )
    return MMEngineWarmupPolyScheduler(
        end_value=solver.BASE_LR_END / solver.BASE_LR if solver.BASE_LR > 0 else 0.0,
        power=solver.POLY_LR_POWER,
        warmup_factor=solver.WARMUP_FACTOR,
        warmup_iters=solver.WARMUP_ITERS,
        max_iter=solver.MAX_ITER,
    )


def build_lr_multiplier(cfg: Any) -> ParamScheduler:
    """The schedule ``SOLVER.LR_SCHEDULER_NAME`` as a multiplier of the base lr over [0, 1],
    combined with its warmup as ``SOLVER.SCHEDULE_STYLE`` says; keys of other schedules must keep
    their defaults."""
    solver = cfg.SOLVER
    owner = f"SOLVER.LR_SCHEDULER_NAME {solver.LR_SCHEDULER_NAME!r}"
    reject_unsupported_keys(cfg, owner, _UNUSED_BY_SCHEDULE.get(solver.LR_SCHEDULER_NAME, ()))
    if solver.SCHEDULE_STYLE == "mmengine":
        return _mmengine_multiplier(solver)
    if solver.SCHEDULE_STYLE != "detectron2":
        raise ValueError(
            f"Unknown SOLVER.SCHEDULE_STYLE {solver.SCHEDULE_STYLE!r}; expected 'detectron2' "
            "or 'mmengine'"
        )
    max_iter = solver.MAX_ITER
    name = solver.LR_SCHEDULER_NAME
    end_value = solver.BASE_LR_END / solver.BASE_LR if solver.BASE_LR > 0 else 0.0
    if name == "WarmupPolyLR":
        sched: ParamScheduler = PolyParamScheduler(1.0, end_value, solver.POLY_LR_POWER)
    elif name == "WarmupCosineLR":
        sched = CosineParamScheduler(1.0, end_value)
    elif name == "WarmupMultiStepLR":
        steps = [s for s in solver.STEPS if 0 < s < max_iter]
        if len(steps) != len(solver.STEPS):
            logger.warning(
                "SOLVER.STEPS %s has values outside (0, MAX_ITER=%d); using %s",
                list(solver.STEPS),
                max_iter,
                steps,
            )
        sched = MultiStepParamScheduler(
            values=[solver.GAMMA**k for k in range(len(steps) + 1)],
            milestones=steps,
            num_updates=max_iter,
        )
    else:
        raise ValueError(
            f"Unknown SOLVER.LR_SCHEDULER_NAME '{name}'; expected 'WarmupPolyLR', "
            "'WarmupCosineLR' or 'WarmupMultiStepLR'"
        )
    warmup_length = min(solver.WARMUP_ITERS / max_iter, 1.0)
    if warmup_length > 0:
        sched = WarmupParamScheduler(
            sched, solver.WARMUP_FACTOR, warmup_length, solver.WARMUP_METHOD
        )
    return sched


def build_lr_scheduler(cfg: Any, optimizer: torch.optim.Optimizer) -> LRMultiplier:
    """Per-iteration scheduler: lr of group g at iteration i is
    ``base_lr_g * schedule(i / SOLVER.MAX_ITER)`` with warmup per ``SOLVER.WARMUP_*``."""
    return LRMultiplier(optimizer, build_lr_multiplier(cfg), max_iter=cfg.SOLVER.MAX_ITER)


def build_gradient_clipper(cfg: Any) -> GradientClipper | None:
    """``clip(parameters)`` per ``SOLVER.CLIP_GRADIENTS``, or ``None`` when disabled.

    "norm" rescales the gradients of all given parameters together so that their
    ``NORM_TYPE``-norm is at most ``CLIP_VALUE`` (returns the norm before clipping); "value"
    clamps each gradient element to ``[-CLIP_VALUE, CLIP_VALUE]``.
    """
    clip = cfg.SOLVER.CLIP_GRADIENTS
    if not clip.ENABLED:
        return None
    max_value = float(clip.CLIP_VALUE)
    if clip.CLIP_TYPE == "norm":
        norm_type = float(clip.NORM_TYPE)

        def clip_norm(parameters: Iterable[torch.Tensor]) -> torch.Tensor:
            return nn.utils.clip_grad_norm_(list(parameters), max_value, norm_type=norm_type)

        return clip_norm
    if clip.CLIP_TYPE == "value":

        def clip_value(parameters: Iterable[torch.Tensor]) -> None:
            nn.utils.clip_grad_value_(list(parameters), max_value)

        return clip_value
    raise ValueError(
        f"Unknown SOLVER.CLIP_GRADIENTS.CLIP_TYPE '{clip.CLIP_TYPE}'; expected 'norm' or 'value'"
    )
