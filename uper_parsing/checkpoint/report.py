"""Readable accounts of the tensors a load could not use, grouped by module."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

__all__ = ["format_key_groups", "format_shape_mismatches", "group_by_module", "shape_mismatches"]


def group_by_module(keys: Iterable[str]) -> dict[str, list[str]]:
    """Group tensor names under the module two levels above the tensor (the layer's parent).

    ``roi_heads.box_predictor.cls_score.weight`` -> ``{"roi_heads.box_predictor":
    ["cls_score.weight"]}``; ``head.weight`` -> ``{"head": ["weight"]}``; a top-level buffer
    goes under ``"(model)"``. Groups and names keep their first-seen order.
    """
    groups: dict[str, list[str]] = {}
    for key in keys:
        parts = key.split(".")
        cut = max(len(parts) - 2, 1) if len(parts) > 1 else 0
        module = ".".join(parts[:cut]) or "(model)"
        groups.setdefault(module, []).append(".".join(parts[cut:]))
    return groups


def format_key_groups(keys: Iterable[str], what: str) -> list[str]:
    """One line per module, every name listed:
    ``"roi_heads.box_predictor: 2 missing (cls_score.weight, cls_score.bias)"``."""
    return [
        f"{module}: {len(names)} {what} ({', '.join(names)})"
        for module, names in group_by_module(keys).items()
    ]


def format_shape_mismatches(
    mismatches: Sequence[tuple[str, Sequence[int], Sequence[int]]],
) -> list[str]:
    """``(key, checkpoint shape, model shape)`` -> ``"key: checkpoint (5, 4) vs model (3, 4)"``."""
    return [
        f"{key}: checkpoint {tuple(ckpt)} vs model {tuple(model)}"
        for key, ckpt, model in mismatches
    ]


def shape_mismatches(
    state: Mapping[str, object], model_state: Mapping[str, object]
) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """``(key, checkpoint shape, model shape)`` of every tensor of ``state`` the model also has
    with another shape."""
    return [
        (k, tuple(v.shape), tuple(model_state[k].shape))
        for k, v in state.items()
        if k in model_state and tuple(v.shape) != tuple(model_state[k].shape)
    ]
