"""``Visualizer``: every picture of the project, drawn over one image (RGB uint8 throughout).

Small images are upscaled before anything is drawn (labels with nearest-neighbour), so that class
names, outlines and legends stay legible on 128-pixel inputs. Every picture is laid out by
:meth:`Visualizer.compose`; the same input always gives the same bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch

from . import layout
from .classes import ClassTable
from .ground_truth import (
    dict_family,
    holds_truth,
    multitask_truth,
    panoptic_truth,
    sem_seg_truth,
)
from .layout import LegendEntry, Panel
from .multitask import part_label_map, prediction_notes, task_classes, truth_notes, visible_parts
from .painting import blend, draw_boxes, draw_edges, draw_names, tight_box
from .panoptic import (
    panoptic_legend,
    panoptic_title,
    segment_colors,
    segment_label,
    segment_positions,
)
from .regions import (
    as_label_map,
    as_rgb_uint8,
    label_regions,
    label_shares,
    resize_labels,
    segment_regions,
)
from .text import Style

__all__ = ["VisImage", "Visualizer", "save_image"]

LabelMap = np.ndarray | torch.Tensor


class VisImage:
    """A drawn picture: (H, W, 3) uint8 RGB."""

    def __init__(self, img: np.ndarray) -> None:
        self._img = img

    @property
    def height(self) -> int:
        return self._img.shape[0]

    @property
    def width(self) -> int:
        return self._img.shape[1]

    def get_image(self) -> np.ndarray:
        """The picture, (H, W, 3) uint8 RGB."""
        return self._img

    def save(self, path: str) -> None:
        """Write the picture to ``path`` (format from the extension), creating its folder."""
        save_image(self._img, path)


def save_image(img_rgb: np.ndarray, path: str) -> None:
    """Write an (H, W, 3) uint8 RGB picture with OpenCV, creating the folder."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    if not cv2.imwrite(path, cv2.cvtColor(img_rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"Could not write a picture to {path}")


class Visualizer:
    """Draws label maps, panoptic segmentations, multi-task outputs and dataset dicts over one
    image, and lays pictures out.

    Args:
        img_rgb: (H, W, 3) uint8 RGB image.
        metadata: the dataset's metadata: ``stuff_classes`` / ``stuff_colors`` (RGB),
            ``thing_classes`` / ``thing_colors``, the multi-task ``object_*`` / ``part_*`` /
            ``material_*`` / ``scene_classes`` / ``texture_classes``, ``ignore_label``; missing
            attributes fall back to class ids, a deterministic palette and 255.
        scale: output size relative to the input.
        min_short_side: small images are upscaled so that the short side of the output is at least
            this many pixels (0 disables), which keeps text legible.
    """

    def __init__(
        self,
        img_rgb: np.ndarray,
        metadata: Any = None,
        *,
        scale: float = 1.0,
        min_short_side: int = 384,
    ) -> None:
        img = as_rgb_uint8(img_rgb)
        height, width = img.shape[:2]
        if min_short_side > 0:
            scale = max(scale, min_short_side / min(height, width))
        self.metadata = metadata
        self.scale = scale
        self.input_hw = (height, width)
        self.output_hw = (max(1, round(height * scale)), max(1, round(width * scale)))
        if self.output_hw != self.input_hw:
            interpolation = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
            img = cv2.resize(img, self.output_hw[::-1], interpolation=interpolation)
        self.img = img
        self.style = Style.for_short_side(min(self.output_hw))
        self.classes = ClassTable.from_metadata(metadata, "stuff")

    def prepare_labels(self, labels: LabelMap) -> np.ndarray:
        """(H, W) labels at the input size -> (H', W') int64 labels at the output size."""
        labels = as_label_map(labels)
        if labels.shape != self.input_hw:
            raise ValueError(
                f"Label map is {labels.shape}, the image is {self.input_hw}; they must match."
            )
        return resize_labels(labels, self.output_hw)

    def compose(
        self,
        panels: Sequence[Panel],
        legend: Sequence[LegendEntry] = (),
        *,
        notes: Sequence[str] = (),
    ) -> VisImage:
        """Panels in a row under their titles (each with its own legend), the shared ``legend``
        to the right (or below, for rows more than twice as wide as tall), ``notes`` below:
        the layout of every picture (see :func:`layout.compose`)."""
        return VisImage(layout.compose(panels, self.style, legend, notes))

    def draw_sem_seg(
        self,
        labels: LabelMap,
        *,
        alpha: float = 0.6,
        area_threshold: int | None = None,
        show_legend: bool = True,
    ) -> VisImage:
        """Class colours blended over the image, region outlines, names and a legend.

        Args:
            labels: (H, W) int class ids at the image's size (or (K, H, W) scores); pixels equal
                to the ignore label are left as the image.
            alpha: opacity of the class colours.
            area_threshold: regions (connected components) smaller than this many input pixels
                get no name; default 0.5% of the image.
            show_legend: add a legend of the classes present with their shares, largest first.
        """
        labels = self.prepare_labels(labels)
        canvas = self._label_canvas(labels, self.classes, alpha, area_threshold)
        legend = self._share_legend(labels, self.classes) if show_legend else ()
        return self.compose([Panel("", canvas)], legend)

    def draw_panoptic_seg(
        self,
        panoptic_seg: LabelMap,
        segments_info: Sequence[Mapping[str, Any]],
        *,
        alpha: float = 0.5,
        area_threshold: int | None = None,
        show_legend: bool = True,
    ) -> VisImage:
        """Segments blended over the image: things as instances (each its own colour, a box on
        its extent, "class 87%" with the score when it has one), stuff as named regions.

        Args:
            panoptic_seg: (H, W) int segment ids at the image's size, 0 = void (left as image).
            segments_info: the segments (``id``, ``isthing``, ``category_id`` = thing or stuff
                index, optional ``score`` and ``iscrowd``), as in the panoptic contract.
            alpha: opacity of the segment colours.
            area_threshold: stuff segments smaller than this many input pixels get no name;
                default 0.5% of the image. Things are always named (when there is room).
            show_legend: add a legend of the classes present, largest first.

        Raises:
            ValueError: a non-zero id of ``panoptic_seg`` is not in ``segments_info``.
        """
        ids = as_label_map(panoptic_seg)
        labels = self.prepare_labels(ids)
        canvas = self._segment_canvas(labels, segments_info, alpha, area_threshold)
        legend = panoptic_legend([(ids, segments_info)], self.metadata) if show_legend else ()
        return self.compose([Panel("", canvas)], legend)

    def draw_multitask(
        self,
        outputs: Mapping[str, Any],
        dataset_dict: Mapping[str, Any] | None = None,
        *,
        texture_crop: bool | None = None,
        alpha: float = 0.6,
    ) -> VisImage:
        """A unified perceptual parser's prediction: [image | object | part | material], each map
        with its legend below, and the predicted scene (and texture) in a line of notes.

        Args:
            outputs: the model's dict for this image: ``object`` (K_obj, H, W), ``part`` (P, H, W),
                ``material`` (K_mat, H, W), ``scene`` (K_scene,), ``texture`` (K_tex,) scores;
                missing maps are left out (parts need the object map).
            dataset_dict: the image's dict; its ``scene`` / ``texture`` are shown as ground truth
                and its ``tasks`` say whether the image is a texture crop.
            texture_crop: show the predicted texture; default: "texture" in the dict's ``tasks``.
            alpha: opacity of the class colours.
        """
        if texture_crop is None:
            texture_crop = dataset_dict is not None and "texture" in dataset_dict.get("tasks", ())
        maps = {}
        if "object" in outputs:
            maps["object"] = as_label_map(outputs["object"])
        if "part" in outputs and "object" in maps:
            parts = self.metadata.object_parts
            maps["part"] = part_label_map(maps["object"], outputs["part"], parts)
        if "material" in outputs:
            maps["material"] = as_label_map(outputs["material"])
        notes = prediction_notes(outputs, self.metadata, dataset_dict, texture_crop)
        return self._multitask_picture(maps, notes, alpha)

    def draw_dataset_dict(self, dataset_dict: Mapping[str, Any]) -> VisImage:
        """The ground truth of a dataset dict of any family, raw (label files, read with the
        project's readers) or mapped by a training mapper (label tensors at the mapped image's
        size; the visualizer's image must then be the mapped image):

        - panoptic (``pan_seg_file_name`` + ``segments_info``, a ``pan_seg`` id map, or mapped
          ``sem_seg`` + ``instances``): as :meth:`draw_panoptic_seg`;
        - multi-task (``tasks``, ``<task>_file_name`` or mapped ``object`` / ``part`` /
          ``material``, ``scene`` / ``texture``): as the multi-task picture, with the labelled
          scene / texture as notes;
        - semantic (``sem_seg_file_name`` or a ``sem_seg`` map): as :meth:`draw_sem_seg`.

        Raises:
            KeyError: the dict holds no ground truth; FileNotFoundError / ValueError from the
                label readers (naming the file).
        """
        return _DICT_DRAWERS[dict_family(dataset_dict)](self, dataset_dict)

    def draw_sem_seg_prediction(
        self,
        prediction: LabelMap,
        dataset_dict: Mapping[str, Any] | None = None,
        *,
        alpha: float = 0.6,
    ) -> VisImage:
        """[image | prediction | ground truth] with titles (the prediction's pixel accuracy) and
        one legend; [image | prediction] when the dict holds no semantic ground truth.

        Args:
            prediction: (H, W) class ids or (K, H, W) scores at the image's size.
            dataset_dict: the image's dict (``sem_seg_file_name`` or a ``sem_seg`` map).
            alpha: opacity of the class colours.
        """
        prediction = as_label_map(prediction)
        maps = {"prediction": prediction}
        if dataset_dict is not None and holds_truth(dataset_dict, "sem_seg"):
            truth = sem_seg_truth(dataset_dict, self.metadata, self.input_hw)
            maps = {self._accuracy_title(prediction, truth): prediction, "ground truth": truth}
        panels = [Panel("image", self.img)]
        for title, labels in maps.items():
            canvas = self._label_canvas(self.prepare_labels(labels), self.classes, alpha)
            panels.append(Panel(title, canvas))
        present = np.concatenate([m[self.classes.valid(m)] for m in maps.values()])
        legend = [LegendEntry(e.name, e.color) for e in self._share_legend(present, self.classes)]
        return self.compose(panels, legend)

    def draw_panoptic_prediction(
        self,
        panoptic_seg: LabelMap,
        segments_info: Sequence[Mapping[str, Any]],
        dataset_dict: Mapping[str, Any] | None = None,
        *,
        alpha: float = 0.5,
    ) -> VisImage:
        """[image | prediction | ground truth] with segment counts in the titles and one legend
        of classes; [image | prediction] when the dict holds no panoptic ground truth.

        Args:
            panoptic_seg / segments_info: the model's panoptic output (see
                :meth:`draw_panoptic_seg`).
            dataset_dict: the image's dict (``pan_seg_file_name`` + ``segments_info``, ...).
            alpha: opacity of the segment colours.
        """
        maps = [("prediction", as_label_map(panoptic_seg), list(segments_info))]
        if dataset_dict is not None and holds_truth(dataset_dict, "panoptic"):
            maps.append(("ground truth", *panoptic_truth(dataset_dict, self.metadata)))
        panels = [Panel("image", self.img)]
        for title, ids, info in maps:
            canvas = self._segment_canvas(self.prepare_labels(ids), info, alpha, None)
            panels.append(Panel(panoptic_title(title, info), canvas))
        legend = panoptic_legend([(ids, info) for _, ids, info in maps], self.metadata)
        return self.compose(panels, legend)

    def _min_area(self, area_threshold: int | None) -> float:
        """Output pixels a region needs to be named: ``area_threshold`` input pixels, default
        0.5% of the image."""
        if area_threshold is None:
            area_threshold = max(1, round(0.005 * self.input_hw[0] * self.input_hw[1]))
        return area_threshold * self.scale * self.scale

    def _label_canvas(
        self,
        labels: np.ndarray,
        classes: ClassTable,
        alpha: float,
        area_threshold: int | None = None,
    ) -> np.ndarray:
        """The image with ``labels`` (output size) blended in, outlined and named."""
        valid = classes.valid(labels)
        palette = classes.palette(int(labels[valid].max()) + 1 if valid.any() else 0)
        canvas = blend(self.img, labels, valid, palette, alpha)
        draw_edges(canvas, labels, valid, palette, self.style.line_width)
        regions = label_regions(labels, valid, self._min_area(area_threshold))
        names = [classes.name(i) for i in range(len(palette))]
        draw_names(canvas, regions, names, palette, self.style)
        return canvas

    def _segment_canvas(
        self,
        ids: np.ndarray,
        segments_info: Sequence[Mapping[str, Any]],
        alpha: float,
        area_threshold: int | None,
    ) -> np.ndarray:
        """The image with the segments of ``ids`` (output size) blended in and outlined, a box
        on every thing, and names."""
        index_map = segment_positions(ids, segments_info)
        valid = index_map >= 0
        palette = segment_colors(segments_info, self.metadata)
        canvas = blend(self.img, index_map, valid, palette, alpha)
        draw_edges(canvas, index_map, valid, palette, self.style.line_width)
        present = set(np.unique(index_map[valid]).tolist())
        things = [k for k, s in enumerate(segments_info) if s["isthing"] and k in present]
        boxes = [tight_box(index_map == k) for k in things]
        draw_boxes(canvas, boxes, [palette[k] for k in things], self.style.box_width)
        stuff_min = self._min_area(area_threshold)
        min_areas = np.array([1 if s["isthing"] else stuff_min for s in segments_info] + [1])
        names = [segment_label(s, self.metadata) for s in segments_info]
        draw_names(canvas, segment_regions(index_map, min_areas), names, palette, self.style)
        return canvas

    def _share_legend(self, labels: np.ndarray, classes: ClassTable) -> list[LegendEntry]:
        """One entry per drawn label of ``labels`` with its share of them, largest first."""
        shares = label_shares(labels[classes.valid(labels)])
        if not shares:
            return []
        palette = classes.palette(max(label for label, _ in shares) + 1)
        return [
            LegendEntry(classes.name(c), tuple(int(v) for v in palette[c]), share)
            for c, share in shares
        ]

    def _accuracy_title(self, prediction: np.ndarray, truth: np.ndarray) -> str:
        """The prediction's title with its pixel accuracy over the scored pixels of ``truth``:
        "prediction (93.1% px acc)"."""
        scored = self.classes.valid(truth)
        if not scored.any():
            return "prediction"
        accuracy = 100 * float(np.mean(prediction[scored] == truth[scored]))
        return f"prediction ({accuracy:.1f}% px acc)"

    def _multitask_picture(
        self, maps: Mapping[str, np.ndarray], notes: Sequence[str], alpha: float = 0.6
    ) -> VisImage:
        """[image | one panel per map (input size), its legend below], notes below."""
        panels = [Panel("image", self.img)]
        for task, labels in maps.items():
            classes = task_classes(self.metadata, task)
            labels = self.prepare_labels(labels)
            canvas = self._label_canvas(labels, classes, alpha)
            panels.append(Panel(task, canvas, self._share_legend(labels, classes)))
        return self.compose(panels, notes=notes)

    def _draw_sem_seg_dict(self, dataset_dict: Mapping[str, Any]) -> VisImage:
        return self.draw_sem_seg(sem_seg_truth(dataset_dict, self.metadata, self.input_hw))

    def _draw_panoptic_dict(self, dataset_dict: Mapping[str, Any]) -> VisImage:
        return self.draw_panoptic_seg(*panoptic_truth(dataset_dict, self.metadata))

    def _draw_multitask_dict(self, dataset_dict: Mapping[str, Any]) -> VisImage:
        maps = multitask_truth(dataset_dict, self.metadata, self.input_hw)
        if "part" in maps:
            maps["part"] = visible_parts(maps["part"], self.metadata)
        notes = truth_notes(dataset_dict, self.metadata)
        return self._multitask_picture(maps, notes)


# how draw_dataset_dict draws each family's ground truth (see ground_truth.dict_family)
_DICT_DRAWERS: dict[str, Callable[[Visualizer, Mapping[str, Any]], VisImage]] = {
    "sem_seg": Visualizer._draw_sem_seg_dict,
    "panoptic": Visualizer._draw_panoptic_dict,
    "multitask": Visualizer._draw_multitask_dict,
}
