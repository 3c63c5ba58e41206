"""Any timm model (ConvNeXt, ...) as a ``Backbone`` with outputs ``res<log2(stride)>``.

The timm model is kept whole under ``model`` with timm's own parameter names (those of timm's
checkpoints: ``model.stem.0.weight``, ``model.stages.1.downsample.1.weight``, ...), less what
``prune_intermediate_layers`` removes (the classifier head, the final norm and the stages after
the deepest requested level); its levels come from ``forward_intermediates(...,
intermediates_only=True)``. A model without ``forward_intermediates`` (none in timm 1.0, but
models registered elsewhere may lack it) is built with timm's ``features_only=True`` instead: its
parameters then carry the names of timm's feature wrapper (``model.stages_0.*`` for a flattened
``stages.0``), which only weights saved from such a wrapper match.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import torch
from torch import nn

from ...checkpoint.formats import load_backbone_weights
from ...checkpoint.paths import resolve_weights_path
from ...config import configurable
from ...layers import ShapeSpec, get_norm
from .backbone import Backbone
from .build import BACKBONE_REGISTRY

__all__ = ["TimmBackbone", "build_timm_backbone"]


# timm is imported where a timm model is built or read, not with this module: importing it is slow
# and most processes (data loading workers, evaluation tools) never need it.


class TimmBackbone(Backbone):
    """A timm model returning the feature levels ``out_indices`` as ``res<log2(stride)>``
    (ConvNeXt: levels 0..3 are ``res2..res5`` at strides 4..32), each optionally followed by a
    per-level norm ``norms.<name>`` (the LayerNorms of mmseg's / transformers' ConvNeXt UPerNets).

    Feature maps have ``floor`` sizes where the model has no padding (ConvNeXt: 45 x 61 ->
    res2 11 x 15, res5 1 x 1); heads resize with ``size=``, so no divisibility is required.
    """

    @configurable
    def __init__(
        self,
        *,
        name: str,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        drop_path_rate: float = 0.0,
        out_norm: str = "",
        pretrained: str = "",
        freeze_at: int = 0,
        in_channels: int = 3,
    ) -> None:
        """
        Args:
            name: timm model name (``timm.list_models()``), built with random weights.
            out_indices: feature levels returned (timm's indices; ConvNeXt: stages 0..3).
            drop_path_rate: stochastic depth of the last block, linear in depth (0 = not passed
                to timm, so models without stochastic depth accept the default).
            out_norm: norm after each returned level, a ``get_norm`` name ("" none, "LN"
                LayerNorm over channels, eps 1e-6).
            pretrained: local file of timm weights ("" = random init), see
                :meth:`load_pretrained_weights` (a features_only model has them loaded by timm
                itself, before wrapping).
            freeze_at: 0 trains everything; k > 0 freezes the first k parameter groups of timm's
                coarse ``group_matcher`` (ConvNeXt: 1 = stem, 2 = stem + stages.0 (res2), ...).
            in_channels: channels of the input image (timm's ``in_chans``).
        """
        super().__init__()
        self.model, self.indices, self.pruned_keys, info = _build_timm_model(
            name, out_indices, drop_path_rate, in_channels, pretrained
        )
        self._set_output_shapes(name, info)
        self.norms = nn.ModuleDict(
            {
                n: get_norm(out_norm, c) or nn.Identity()
                for n, c in self._out_feature_channels.items()
            }
        )
        if pretrained and self.uses_intermediates:
            self.load_pretrained_weights(pretrained)
        self.frozen_modules: list[nn.Module] = []
        self.freeze(freeze_at)

    @classmethod
    def from_config(cls, cfg, input_shape: ShapeSpec) -> dict:
        return {
            "name": cfg.MODEL.TIMM.NAME,
            "out_indices": cfg.MODEL.TIMM.OUT_INDICES,
            "drop_path_rate": cfg.MODEL.TIMM.DROP_PATH_RATE,
            "out_norm": cfg.MODEL.TIMM.OUT_NORM,
            "pretrained": cfg.MODEL.BACKBONE.PRETRAINED,
            "freeze_at": cfg.MODEL.BACKBONE.FREEZE_AT,
            "in_channels": input_shape.channels,
        }

    @property
    def uses_intermediates(self) -> bool:
        """True when the levels come from ``forward_intermediates`` (timm's own names)."""
        return hasattr(self.model, "forward_intermediates")

    def _set_output_shapes(self, name: str, info: list[dict]) -> None:
        """Names ``res<log2(reduction)>``, channels and strides from timm's ``feature_info``."""
        self._out_features, self._out_feature_channels, self._out_feature_strides = [], {}, {}
        for level in info:
            stride = int(level["reduction"])
            if stride & (stride - 1):
                raise ValueError(
                    f"timm model '{name}' (MODEL.TIMM.NAME) has a level at stride {stride}, not a "
                    f"power of two: it has no res<log2(stride)> name"
                )
            out_name = f"res{int(math.log2(stride))}"
            if out_name in self._out_feature_strides:
                raise ValueError(
                    f"MODEL.TIMM.OUT_INDICES {self.indices} of '{name}' give two levels at "
                    f"stride {stride} ({out_name}); pick one level per stride"
                )
            self._out_features.append(out_name)
            self._out_feature_channels[out_name] = int(level["num_chs"])
            self._out_feature_strides[out_name] = stride

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: Tensor (N, C, H, W). Returns {"resK": Tensor (N, C_k, ~H/2^k, ~W/2^k)}."""
        if self.uses_intermediates:
            levels = self.model.forward_intermediates(
                x, indices=self.indices, output_fmt="NCHW", intermediates_only=True
            )
        else:
            levels = self.model(x)
            levels = list(levels.values()) if isinstance(levels, Mapping) else levels
        return {n: self.norms[n](level) for n, level in zip(self._out_features, levels)}

    def freeze(self, freeze_at: int) -> TimmBackbone:
        """Freeze the first ``freeze_at`` groups of timm's coarse ``group_matcher`` (stem, then
        one group per stage): no gradients, BatchNorms frozen (timm's
        ``freeze_batch_norm_2d``), and kept in eval mode by :meth:`train` (no drop path), as
        mmseg's ``frozen_stages``. Returns self."""
        from timm.layers import freeze_batch_norm_2d

        if freeze_at == 0:
            return self
        groups = _parameter_groups(self.model)
        if not 0 <= freeze_at <= len(groups):
            raise ValueError(
                f"MODEL.BACKBONE.FREEZE_AT must be in [0, {len(groups)}] for this timm model "
                f"(stem + {len(groups) - 1} stage groups), got {freeze_at}"
            )
        frozen = {name for group in groups[:freeze_at] for name in group}
        for name, param in self.model.named_parameters():
            if name in frozen:
                param.requires_grad_(False)
        for module_name in _covering_modules(self.model, frozen):
            module = freeze_batch_norm_2d(self.model.get_submodule(module_name))
            self.model.set_submodule(module_name, module)
            self.frozen_modules.append(module)
        self.train(self.training)
        return self

    def train(self, mode: bool = True) -> TimmBackbone:
        super().train(mode)
        for module in self.frozen_modules:
            module.eval()
        return self

    def load_pretrained_weights(self, weights: str | Mapping[str, torch.Tensor]) -> None:
        """Load ``MODEL.BACKBONE.PRETRAINED`` (a path or URL, or a state dict) through
        ``checkpoint.load_backbone_weights``: timm files, the original ConvNeXt repository's,
        mmpretrain's and converted ones are recognised. The classifier head and final norm that
        pruning removed are dropped quietly; other missing, unexpected and shape-mismatched
        tensors are logged by module.
        """
        load_backbone_weights(self, weights, unused_ok=[f"model.{k}" for k in self.pruned_keys])


def _build_timm_model(
    name: str,
    out_indices: Sequence[int],
    drop_path_rate: float,
    in_channels: int,
    pretrained: str,
) -> tuple[nn.Module, list[int], list[str], list[dict]]:
    """timm's model pruned for ``forward_intermediates`` (or its features_only wrapper), the
    absolute indices of its levels, the state-dict keys pruning removed, and the levels'
    ``feature_info`` (``num_chs``, ``reduction``)."""
    import timm

    extra = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
    model = timm.create_model(name, pretrained=False, in_chans=in_channels, **extra)
    if not hasattr(model, "forward_intermediates"):
        model = _features_only_model(name, out_indices, pretrained, in_channels, extra)
        return model, list(out_indices), [], list(model.feature_info.get_dicts())
    full_keys = list(model.state_dict())
    indices = model.prune_intermediate_layers(list(out_indices), prune_norm=True, prune_head=True)
    kept = set(model.state_dict())
    info = getattr(model.feature_info, "info", model.feature_info)  # a FeatureInfo or a list
    pruned = [k for k in full_keys if k not in kept]
    return model, indices, pruned, [dict(info[i]) for i in indices]


def _features_only_model(
    name: str, out_indices: Sequence[int], pretrained: str, in_channels: int, extra: dict
) -> nn.Module:
    """timm's ``features_only`` wrapper; ``pretrained`` (timm's names) is loaded by timm into
    the whole model before wrapping, with the model's own checkpoint filter."""
    import timm

    if pretrained:
        pretrained = resolve_weights_path(pretrained, setting="MODEL.BACKBONE.PRETRAINED")
    overlay = {"pretrained_cfg_overlay": {"file": pretrained}} if pretrained else {}
    return timm.create_model(
        name,
        pretrained=bool(pretrained),
        features_only=True,
        out_indices=tuple(out_indices),
        in_chans=in_channels,
        **overlay,
        **extra,
    )


def _parameter_groups(model: nn.Module) -> list[list[str]]:
    """Parameter names of each group of timm's coarse ``group_matcher``, in order."""
    from timm.models import group_parameters

    if not hasattr(model, "group_matcher"):
        raise ValueError(
            f"MODEL.BACKBONE.FREEZE_AT needs timm's group_matcher, which {type(model).__name__} "
            f"(a features_only wrapper) lacks; set it to 0"
        )
    return list(group_parameters(model, model.group_matcher(coarse=True)).values())


def _covering_modules(model: nn.Module, names: Collection[str]) -> list[str]:
    """The outermost submodules of ``model`` all of whose parameters are in ``names``."""
    chosen: list[str] = []
    for module_name, module in model.named_modules():
        if not module_name or any(module_name.startswith(c + ".") for c in chosen):
            continue
        params = [f"{module_name}.{n}" for n, _ in module.named_parameters()]
        if params and all(p in names for p in params):
            chosen.append(module_name)
    return chosen


@BACKBONE_REGISTRY.register()
def build_timm_backbone(cfg, input_shape: ShapeSpec) -> TimmBackbone:
    """A timm model from ``MODEL.TIMM`` and ``MODEL.BACKBONE`` (pretrained, freeze_at)."""
    return TimmBackbone(cfg, input_shape)
