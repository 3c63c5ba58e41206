"""Visualizer.draw_multitask: shapes, panels, part ids from the predicted object's slice; the
multi-task ground truth of a mapped dataset dict."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from uper_parsing.visualization import Visualizer, part_label_map
from uper_parsing.visualization.colormap import PANEL_RGB

META = SimpleNamespace(
    object_classes=["wall", "chair", "floor"],
    object_colors=[[120, 120, 120], [200, 80, 40], [80, 50, 50]],
    part_classes=["chair/-", "chair/seat", "chair/leg"],
    object_parts=[[], [0, 1, 2], []],
    material_classes=["wood", "fabric"],
    material_colors=[[150, 100, 50], [60, 120, 200]],
    scene_classes=["kitchen", "bedroom"],
    texture_classes=["striped", "dotted"],
    ignore_label=255,
)


def draw_multitask(image, outputs, dataset_dict=None, **kwargs) -> np.ndarray:
    return Visualizer(image, META, **kwargs).draw_multitask(outputs, dataset_dict).get_image()


def one_hot(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    return torch.from_numpy(np.moveaxis(np.eye(num_classes, dtype=np.float32)[labels], -1, 0))


def case(height: int = 60, width: int = 90):
    image = np.full((height, width, 3), 200, np.uint8)
    obj = np.zeros((height, width), int)
    obj[height // 2 :, : width // 2] = 1
    obj[-5:] = 2
    part = np.ones((height, width), int)
    part[3 * height // 4 :] = 2
    part[:, :5] = 0  # "-": chair pixels without a part
    outputs = {
        "object": one_hot(obj, 3),
        "part": one_hot(part, 3),
        "material": one_hot((obj == 1).astype(int), 2),
        "scene": torch.tensor([0.1, 3.0]),
        "texture": torch.tensor([2.0, 0.0]),
    }
    return image, obj, part, outputs


def test_part_label_map_uses_the_predicted_objects_slice():
    _, obj, part, outputs = case()
    parts = part_label_map(obj, outputs["part"], META.object_parts)
    assert parts.dtype == np.int64 and parts.shape == obj.shape
    assert np.all(parts[obj != 1] == -1)  # wall / floor own no parts
    # the chair's seat / leg where predicted; "-" (no part) drawn as unlabelled
    assert np.array_equal(parts[obj == 1], np.where(part == 0, -1, part)[obj == 1])
    assert (parts[obj == 1] == -1).any()


def test_picture_has_four_panels_and_a_text_strip():
    image, _, _, outputs = case()
    inputs = {"tasks": ["object", "part", "scene"], "scene": 1}
    picture = draw_multitask(image, outputs, inputs, min_short_side=120)
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3
    # Four 180-pixel panels (upscaled 2x) side by side, plus gaps.
    assert 4 * 180 <= picture.shape[1] < 4 * 180 + 100
    # Panels: coloured pixels (the blended label maps) in each of the four columns.
    top = picture[40:150]
    coloured = np.abs(top.astype(int) - np.array(PANEL_RGB)).sum(-1) > 30
    column_width = picture.shape[1] // 4
    for index in range(4):
        assert coloured[:, index * column_width : (index + 1) * column_width].any(), index
    # The text strip below the panels has dark ink on the panel background.
    strip = picture[-30:]
    assert (strip.sum(-1) < 200).any() and (strip == 255).all(-1).mean() > 0.5


def test_texture_line_only_for_texture_crops():
    image, _, _, outputs = case()
    scene_only = draw_multitask(image, outputs, {"tasks": ["scene"]})
    crop = draw_multitask(image, outputs, {"tasks": ["texture"], "texture": 0})
    assert crop.shape[1] == scene_only.shape[1]
    assert crop.shape[0] > scene_only.shape[0]  # one more text line
    no_inputs = draw_multitask(image, outputs)
    assert no_inputs.shape == scene_only.shape


def test_missing_maps_are_left_out():
    image, _, _, outputs = case()
    only_scene = {"scene": outputs["scene"]}
    picture = draw_multitask(image, only_scene, min_short_side=120)
    assert picture.shape[1] < 200  # the image panel alone


def test_ground_truth_of_a_mapped_dict_hides_no_part_pixels():
    image, obj, part, _ = case()
    mapped = {
        "tasks": ["object", "part", "scene"],
        "object": torch.from_numpy(obj.astype(np.uint8)),
        "part": torch.from_numpy(np.where(obj == 1, part, 255).astype(np.uint8)),
        "scene": 0,
    }
    visualizer = Visualizer(image, META, min_short_side=120)
    truth = visualizer.draw_dataset_dict(mapped).get_image()
    outputs = {"object": one_hot(obj, 3), "part": one_hot(part, 3)}
    predicted = visualizer.draw_multitask(outputs).get_image()
    # Same maps: the same panels; only the notes differ (labelled scene vs no prediction).
    panels_h = 150
    assert truth.shape[1] == predicted.shape[1]
    assert (truth[:panels_h] == predicted[:panels_h]).all()
    assert not (truth[-25:] == predicted[-25:]).all()
