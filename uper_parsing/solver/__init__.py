from .build import (
    GradientClipper,
    build_gradient_clipper,
    build_lr_multiplier,
    build_lr_scheduler,
    build_optimizer,
    get_default_optimizer_params,
)
from .layer_decay import LayerDecay, WeightDecayOverrides, backbone_family
from .lr_scheduler import (
    LRMultiplier,
    MMEngineWarmupPolyScheduler,
    PolyParamScheduler,
    WarmupParamScheduler,
)

__all__ = [
    "GradientClipper",
    "LRMultiplier",
    "LayerDecay",
    "MMEngineWarmupPolyScheduler",
    "PolyParamScheduler",
    "WarmupParamScheduler",
    "WeightDecayOverrides",
    "backbone_family",
    "build_gradient_clipper",
    "build_lr_multiplier",
    "build_lr_scheduler",
    "build_optimizer",
    "get_default_optimizer_params",
]
