"""One picture per image of a unified perceptual parser's prediction (RGB uint8 throughout).

[image | object | part | material] panels, each with its own legend below, and a text strip with
the predicted scene (and texture, for texture crops), next to the ground truth when given.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from .visualizer import (
    _INK_RGB,
    Visualizer,
    _as_label_map,
    _legend_entries,
    _pad_to,
    _Style,
    draw_legend,
    draw_side_by_side,
)

__all__ = ["part_label_map", "visualize_multitask_prediction"]

_MUTED_RGB = (90, 90, 90)


def part_label_map(
    object_labels: np.ndarray, part_scores: torch.Tensor | np.ndarray, object_parts: list[list[int]]
) -> np.ndarray:
    """(H, W) int64 global part ids: at each pixel, the argmax over the slice of ``part_scores``
    (P, H, W) of the object in ``object_labels`` (H, W); -1 where that object has no parts or
    its background part "-" (its first) wins, so "no part" is drawn as unlabelled."""
    scores = (
        part_scores.detach().cpu().float().numpy() if torch.is_tensor(part_scores) else part_scores
    )
    parts = np.full(object_labels.shape, -1, dtype=np.int64)
    for obj, ids in enumerate(object_parts):
        inside = object_labels == obj
        if len(ids) == 0 or not inside.any():
            continue
        local = np.asarray(scores)[list(ids)][:, inside].argmax(axis=0)
        parts[inside] = np.where(local == 0, -1, np.asarray(ids)[local])
    return parts


def _top1(scores: torch.Tensor | np.ndarray) -> tuple[int, float]:
    """(index, softmax probability) of the highest of (K,) scores."""
    values = torch.as_tensor(scores).detach().cpu().float().reshape(-1)
    probs = torch.softmax(values, dim=0)
    index = int(probs.argmax())
    return index, float(probs[index])


def _name(names: Sequence[str] | None, index: int) -> str:
    return str(names[index]) if names is not None and 0 <= index < len(names) else str(index)


def _text_lines(
    outputs: dict[str, Any], metadata: Any, inputs: dict[str, Any] | None, texture_crop: bool
) -> list[tuple[str, tuple[int, int, int]]]:
    """(line, colour) for the text strip: predicted scene / texture, ground truth when given."""
    lines = []
    tasks = ["scene"] + (["texture"] if texture_crop else [])
    for task in tasks:
        if task not in outputs:
            continue
        names = getattr(metadata, f"{task}_classes", None)
        index, prob = _top1(outputs[task])
        line = f"{task}: {_name(names, index)} ({100 * prob:.0f}%)"
        if inputs is not None and task in inputs and task in inputs.get("tasks", (task,)):
            gt = int(inputs[task])
            mark = "right" if gt == index else "wrong"
            line += f"    ground truth: {_name(names, gt)} [{mark}]"
        lines.append((line, _INK_RGB))
    if not lines:
        lines.append(("no scene / texture prediction", _MUTED_RGB))
    return lines


def _text_strip(lines: list[tuple[str, tuple[int, int, int]]], style: _Style, width: int):
    _, text_h, baseline = style.text_size("Ag", scale=1.15)
    row_h = text_h + baseline + style.pad
    strip = _pad_to(np.zeros((0, 0, 3), np.uint8), 2 * style.pad + len(lines) * row_h, width)
    for row, (line, color) in enumerate(lines):
        y = style.pad + row * row_h + text_h
        style.put_text(strip, line, (2 * style.pad, y), color, scale=1.15)
    strip[0, :] = 200  # a hairline between the panels and the text
    return strip


def _panel_with_legend(
    visualizer: Visualizer, labels: np.ndarray, meta: SimpleNamespace, alpha: float
) -> np.ndarray:
    """The label map drawn over the image, its legend (classes present, largest first) below."""
    view = Visualizer(visualizer.img, meta, min_short_side=0)
    labels = visualizer.prepare_labels(labels)
    drawn = view.draw_sem_seg(labels, alpha=alpha, show_legend=False).get_image()
    valid = labels[(labels >= 0) & (labels != view.ignore_label)]
    entries = _legend_entries(valid)
    if not entries:
        return drawn
    palette = view.palette(max(c for c, _ in entries) + 1)
    legend = draw_legend(
        [(view.class_name(c), tuple(int(v) for v in palette[c]), share) for c, share in entries],
        view.style,
        max_width=drawn.shape[1],
    )
    legend = _pad_to(legend[:, : drawn.shape[1]], legend.shape[0], drawn.shape[1])
    return np.concatenate([drawn, legend], axis=0)


def visualize_multitask_prediction(
    image: np.ndarray,
    outputs: dict[str, Any],
    metadata: Any,
    inputs: dict[str, Any] | None = None,
    *,
    texture_crop: bool | None = None,
    alpha: float = 0.6,
    min_short_side: int = 320,
) -> np.ndarray:
    """[image | object | part | material] with titles and legends, and a text strip below.

    Args:
        image: (H, W, 3) uint8 RGB at the size the outputs were returned at.
        outputs: the model's dict for this image: ``object`` (K_obj, H, W), ``part`` (P, H, W),
            ``material`` (K_mat, H, W), ``scene`` (K_scene,), ``texture`` (K_tex,) scores; maps
            that are missing are left out.
        metadata: the multi-task metadata (``object_classes`` / ``object_colors``, ``part_classes``,
            ``object_parts``, ``material_classes`` / ``material_colors``, ``scene_classes``,
            ``texture_classes``, ``ignore_label``).
        inputs: the image's input dict; its ``scene`` / ``texture`` are shown as ground truth and
            its ``tasks`` decide whether the image is a texture crop.
        texture_crop: show the predicted texture; default: ``"texture"`` in ``inputs["tasks"]``.
        alpha: opacity of the class colours.
        min_short_side: small images are upscaled to this short side before drawing.

    Returns:
        (H', W', 3) uint8 RGB picture.
    """
    if texture_crop is None:
        texture_crop = inputs is not None and "texture" in inputs.get("tasks", ())
    visualizer = Visualizer(image, None, min_short_side=min_short_side)
    ignore = getattr(metadata, "ignore_label", 255)
    panels, titles = [visualizer.img], ["image"]
    object_labels = None
    if "object" in outputs:
        object_labels = _as_label_map(outputs["object"])
        meta = SimpleNamespace(
            stuff_classes=list(metadata.object_classes),
            stuff_colors=getattr(metadata, "object_colors", None),
            ignore_label=ignore,
        )
        panels.append(_panel_with_legend(visualizer, object_labels, meta, alpha))
        titles.append("object")
    if "part" in outputs and object_labels is not None:
        parts = part_label_map(object_labels, outputs["part"], metadata.object_parts)
        meta = SimpleNamespace(stuff_classes=list(metadata.part_classes), ignore_label=-1)
        panels.append(_panel_with_legend(visualizer, parts, meta, alpha))
        titles.append("part")
    if "material" in outputs:
        meta = SimpleNamespace(
            stuff_classes=list(metadata.material_classes),
            stuff_colors=getattr(metadata, "material_colors", None),
            ignore_label=ignore,
        )
        panels.append(
            _panel_with_legend(visualizer, _as_label_map(outputs["material"]), meta, alpha)
        )
        titles.append("material")
    picture = draw_side_by_side(panels, titles)
    strip = _text_strip(
        _text_lines(outputs, metadata, inputs, texture_crop), visualizer.style, picture.shape[1]
    )
    return np.concatenate([picture, strip], axis=0)
