"""Per-parameter learning-rate scales by depth and weight decay by name (mmseg / mmengine rules).

``LayerDecay`` is mmseg's ``LearningRateDecayOptimizerConstructor`` on our parameter names: each
backbone parameter gets a layer id, its learning rate is ``base_lr * rate ** (num_layers + 1 -
id)``; everything outside the backbone's blocks (heads, output norms) gets id ``num_layers + 1``.
``WeightDecayOverrides`` is mmengine's ``paramwise_cfg.custom_keys`` for the weight decay.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

__all__ = [
    "LAYER_ID_RULES",
    "LayerDecay",
    "WeightDecayOverrides",
    "backbone_family",
    "convnext_layer_id",
    "convnext_stage_id",
]

# (parameter name in the whole model, num_layers) -> layer id
LayerIdFn = Callable[[str, int], int]

# Our timm ConvNeXt names. mmseg's backbone.downsample_layers.0 is our stem, its
# downsample_layers.{i} (i >= 1) our stages.{i}.downsample, its stages.{i}.{j} our
# stages.{i}.blocks.{j}; its backbone.norm{i} (our backbone.norms.res{i+2}) is outside all three.
_CONVNEXT_STEM = re.compile(r"backbone\.model\.stem\.")
_CONVNEXT_DOWNSAMPLE = re.compile(r"backbone\.model\.stages\.(\d+)\.downsample\.")
_CONVNEXT_BLOCK = re.compile(r"backbone\.model\.stages\.(\d+)\.blocks\.(\d+)\.")

# mmseg's get_layer_id_for_convnext: downsampling layer i -> id, stage i -> id (others: num_layers)
_CONVNEXT_DOWNSAMPLE_LAYER_ID = {0: 0, 1: 2, 2: 3}
_CONVNEXT_STAGE_LAYER_ID = {0: 1, 1: 2, 2: 3}


def convnext_stage_id(name: str, num_layers: int) -> int:
    """mmseg's ``get_stage_id_for_convnext``: stem / downsamplings 0, blocks of stage s s + 1,
    anything else ``num_layers + 1``."""
    if _CONVNEXT_STEM.match(name) or _CONVNEXT_DOWNSAMPLE.match(name):
        return 0
    block = _CONVNEXT_BLOCK.match(name)
    if block:
        return int(block.group(1)) + 1
    return num_layers + 1


def convnext_layer_id(name: str, num_layers: int) -> int:
    """mmseg's ``get_layer_id_for_convnext``: stem 0; stage 0 blocks 1; stage 1 (downsampling
    and blocks) 2; stage 2 downsampling 3, its block j 3 + j // 3; stage 3 ``num_layers``;
    anything else ``num_layers + 1``."""
    if _CONVNEXT_STEM.match(name):
        return 0
    downsample = _CONVNEXT_DOWNSAMPLE.match(name)
    if downsample:
        return _CONVNEXT_DOWNSAMPLE_LAYER_ID.get(int(downsample.group(1)), num_layers)
    block = _CONVNEXT_BLOCK.match(name)
    if block:
        stage, index = int(block.group(1)), int(block.group(2))
        if stage == 2:
            return 3 + index // 3
        return _CONVNEXT_STAGE_LAYER_ID.get(stage, num_layers)
    return num_layers + 1


# Backbone family (see backbone_family) -> {SOLVER.LAYER_DECAY.TYPE: layer-id rule}
LAYER_ID_RULES: dict[str, dict[str, LayerIdFn]] = {
    "ConvNeXt": {"stage_wise": convnext_stage_id, "layer_wise": convnext_layer_id},
}

# mmseg's constructor exempts these from weight decay (besides 1-D parameters and biases)
_POSITION_EMBEDDINGS = ("pos_embed", "cls_token")


def backbone_family(model: nn.Module) -> str:
    """The class name of the network inside ``model.backbone`` (a wrapper's ``.model``, as the
    timm backbone has), or of the backbone itself; mmseg picks its rule by that name too."""
    backbone = model.backbone
    inner = getattr(backbone, "model", None)
    return type(inner if isinstance(inner, nn.Module) else backbone).__name__


@dataclass(frozen=True)
class LayerDecay:
    """Learning-rate scale and weight decay per parameter, as mmseg's constructor sets them.

    ``rule`` gives a parameter's layer id from its name in the whole model; the scale is
    ``rate ** (num_layers + 1 - id)``.
    """

    rule: LayerIdFn
    rate: float
    num_layers: int

    def lr_scale(self, name: str) -> float:
        return self.rate ** (self.num_layers + 1 - self.rule(name, self.num_layers))

    @staticmethod
    def weight_decay(name: str, param: nn.Parameter, weight_decay: float) -> float:
        """``weight_decay`` for parameters of two or more dims, 0 for 1-D ones, biases and
        position embeddings (mmseg compares the whole name with these; we take its last part)."""
        exempt = (
            param.ndim == 1
            or name.endswith(".bias")
            or name.rsplit(".", 1)[-1] in _POSITION_EMBEDDINGS
        )
        return 0.0 if exempt else weight_decay

    @classmethod
    def for_model(
        cls, model: nn.Module, *, decay_type: str, rate: float, num_layers: int
    ) -> LayerDecay:
        """The rule of ``model``'s backbone family; an error names the config key when there
        is none for the family or the type."""
        family = backbone_family(model)
        if family not in LAYER_ID_RULES:
            raise ValueError(
                f"SOLVER.LAYER_DECAY.ENABLED: no layer-decay rule for the backbone {family!r}; "
                f"rules exist for {sorted(LAYER_ID_RULES)}"
            )
        rules = LAYER_ID_RULES[family]
        if decay_type not in rules:
            raise ValueError(
                f"SOLVER.LAYER_DECAY.TYPE = {decay_type!r} is not one of {sorted(rules)}"
            )
        return cls(rule=rules[decay_type], rate=rate, num_layers=num_layers)


class WeightDecayOverrides:
    """mmengine's ``custom_keys`` for the weight decay: the first key, longest first (ties in
    alphabetical order), that is a substring of a parameter's full name sets its weight decay."""

    def __init__(self, decays: dict[str, float]) -> None:
        self.decays = dict(decays)
        self._keys = sorted(sorted(self.decays), key=len, reverse=True)

    @classmethod
    def parse(cls, entries: Sequence[str]) -> WeightDecayOverrides:
        """From ``SOLVER.WEIGHT_DECAY_OVERRIDES`` entries ``"substring=value"``; an error names
        a malformed or repeated entry."""
        decays: dict[str, float] = {}
        for entry in entries:
            key, sep, value = str(entry).rpartition("=")
            try:
                decay = float(value)
            except ValueError:
                decay = None
            if not sep or not key or decay is None:
                raise ValueError(
                    f"SOLVER.WEIGHT_DECAY_OVERRIDES entry {entry!r} is not 'substring=value'"
                )
            if key in decays:
                raise ValueError(f"SOLVER.WEIGHT_DECAY_OVERRIDES names {key!r} twice")
            decays[key] = decay
        return cls(decays)

    def lookup(self, name: str) -> float | None:
        """The weight decay the overrides give the parameter ``name``, or None."""
        for key in self._keys:
            if key in name:
                return self.decays[key]
        return None
