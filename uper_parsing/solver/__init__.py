from .build import (
    GradientClipper,
    build_gradient_clipper,
    build_lr_multiplier,
    build_lr_scheduler,
    build_optimizer,
    get_default_optimizer_params,
)
from .lr_scheduler import LRMultiplier, PolyParamScheduler, WarmupParamScheduler

__all__ = [
    "GradientClipper",
    "LRMultiplier",
    "PolyParamScheduler",
    "WarmupParamScheduler",
    "build_gradient_clipper",
    "build_lr_multiplier",
    "build_lr_scheduler",
    "build_optimizer",
    "get_default_optimizer_params",
]
