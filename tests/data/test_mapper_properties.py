"""Property-based tests of the training mappers of every family (semantic, panoptic, multi-task)
on random files: images of 1 to 1024 px a side, labels from empty to dense (ignore-heavy,
void-heavy, unlabelled), degenerate instances (one pixel, one row), crops that remove every
instance, texture-only samples; any resize / crop / flip / pad / interpolation.

Each mapper runs as registered, plus the two coordinate maps of ``_geometry_oracle`` among its
label maps, so every output is checked against the numpy oracle of where each pixel came from;
and dtypes and value ranges are checked against the dataset's classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from _geometry_oracle import (
    COL,
    IGNORE,
    ROW,
    check_image,
    coordinate_image,
    coordinate_maps,
    image_sizes,
    moved,
    pipelines,
    ramp_image,
    random_labels,
    resized_size,
    source_pixels,
    train_cfg,
)
from hypothesis import event, given, settings
from hypothesis import strategies as st

from uper_parsing.data import (
    MultiTaskDatasetMapper,
    PanopticDatasetMapper,
    SemSegDatasetMapper,
    id2rgb,
    multitask_metadata,
    read_multitask_label,
)
from uper_parsing.data.catalog import Metadata
from uper_parsing.data.transforms import build_augmentation

IGNORE_SHARES = st.sampled_from([0.0, 0.5, 0.95, 1.0])  # 1.0: nothing labelled
SEEDS = st.integers(0, 2**31 - 1)


class _Tracked:
    """Mapper mix-in: the coordinate maps move with the label maps (as int32)."""

    def read_labels(self, d: dict, hw: tuple[int, int]) -> dict[str, np.ndarray]:
        return {**super().read_labels(d, hw), **coordinate_maps(hw)}

    def label_dtype(self, name: str) -> torch.dtype:
        return torch.int32 if name in (ROW, COL) else super().label_dtype(name)


class TrackedSemSeg(_Tracked, SemSegDatasetMapper):
    pass


class TrackedPanoptic(_Tracked, PanopticDatasetMapper):
    pass


class TrackedMultiTask(_Tracked, MultiTaskDatasetMapper):
    pass


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Where each example writes its files (over the previous example's)."""
    return tmp_path_factory.mktemp("mapper_properties")


def _write(path: Path, array: np.ndarray) -> str:
    assert cv2.imwrite(str(path), array, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    return str(path)


def _sample(folder: Path, hw: tuple[int, int], pipeline: dict) -> tuple[dict, np.ndarray]:
    """The dataset dict's image fields and the RGB image written: ``coordinate_image`` when the
    pipeline does not resize (checked exactly), else ``ramp_image``."""
    image = coordinate_image(hw) if pipeline["RESIZE_TYPE"] == "none" else ramp_image(hw)
    d = {"file_name": _write(folder / "image.png", image[..., ::-1]), "image_id": "x"}
    return {**d, "height": hw[0], "width": hw[1]}, image


def _map(mapper_cls: type, d: dict, metadata: Any, pipeline: dict, seed: int):
    """Map ``d`` for training with ``pipeline``, torch seeded with ``seed``. Returns the output,
    the tracked source rows and columns, and the size after the resize (None without one)."""
    augmentations = build_augmentation(train_cfg(pipeline), True, ignore_label=IGNORE)
    mapper = mapper_cls(True, augmentations=augmentations, metadata=metadata)
    torch.manual_seed(seed)
    out = mapper(d)
    hw = (d["height"], d["width"])
    assert (out["height"], out["width"]) == hw
    image = out["image"]
    assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3
    rows, cols = source_pixels(out[ROW].numpy(), out[COL].numpy(), hw)
    resized = None
    if pipeline["RESIZE_TYPE"] != "none":
        resized = resized_size(mapper.augmentations, hw, seed)
    return out, rows, cols, resized


def _check_map(out: dict, name: str, expected: np.ndarray) -> None:
    """Label map ``name`` is one byte a pixel, the image's size, and equals ``expected``."""
    got = out[name]
    assert got.dtype == torch.uint8, f"{name}: {got.dtype}"
    assert got.shape == out["image"].shape[1:], f"{name}: {got.shape}"
    assert np.array_equal(got.numpy(), expected), f"{name} drifted from the image"


@settings(max_examples=150)
@given(
    hw=image_sizes(),
    pipeline=pipelines(photometric=False),
    num_classes=st.integers(1, 30),
    reduce_zero_label=st.booleans(),
    ignore_share=IGNORE_SHARES,
    seed=SEEDS,
)
def test_semantic_mapper(folder, hw, pipeline, num_classes, reduce_zero_label, ignore_share, seed):
    rng = np.random.default_rng(seed)
    train_ids = random_labels(rng, hw, np.arange(num_classes), ignore_share)
    stored = train_ids
    if reduce_zero_label:  # stored v + 1, unlabelled 0 (or 255, which also stays ignored)
        stored = np.where(train_ids == IGNORE, rng.choice([0, IGNORE], hw), train_ids + 1)
    d, image = _sample(folder, hw, pipeline)
    d["sem_seg_file_name"] = _write(folder / "label.png", stored.astype(np.uint8))
    metadata = Metadata("fuzzed_sem_seg").set(
        stuff_classes=[f"c{i}" for i in range(num_classes)],
        ignore_label=IGNORE,
        reduce_zero_label=reduce_zero_label,
    )
    out, rows, cols, resized = _map(TrackedSemSeg, d, metadata, pipeline, seed)
    _check_map(out, "sem_seg", moved(train_ids, rows, cols, out["sem_seg"].shape, IGNORE))
    values = set(out["sem_seg"].unique().tolist())
    assert values <= set(range(num_classes)) | {IGNORE}
    check_image(out["image"].permute(1, 2, 0).numpy(), image, rows, cols, resized)


THINGS, STUFF = ["person", "car", "dog"], ["sky", "road", "grass"]
PANOPTIC_METADATA = Metadata("fuzzed_panoptic").set(
    thing_classes=THINGS, stuff_classes=STUFF, ignore_label=IGNORE
)


def _segments(rng: np.random.Generator, hw: tuple[int, int], void_share: float):
    """(H, W) int64 segment ids (0 = void) of up to 8 painted rectangles, many of them one pixel
    or one line, some at the border, ids up to 256^3 - 1; and the ``segments_info`` of those that
    are still visible (things: ``category_id`` < 3, some crowd; stuff < 3)."""
    ids = np.zeros(hw, np.int64)
    count = int(rng.integers(0, 9))
    segment_ids = rng.choice(np.arange(1, 256**3), count, replace=False)
    for segment_id in segment_ids:
        top, left = int(rng.integers(0, hw[0])), int(rng.integers(0, hw[1]))
        height = int(rng.choice([1, 2, rng.integers(1, hw[0] + 1)]))
        width = int(rng.choice([1, 2, rng.integers(1, hw[1] + 1)]))
        ids[top : top + height, left : left + width] = segment_id
    ids[rng.random(hw) < void_share] = 0
    segments = []
    for segment_id in segment_ids[np.isin(segment_ids, ids)]:
        isthing = bool(rng.integers(0, 2))
        segments.append({
            "id": int(segment_id), "category_id": int(rng.integers(0, 3)), "isthing": isthing,
            "iscrowd": int(isthing and rng.random() < 0.2),
        })  # fmt: skip
    return ids, segments


def _expected_instances(ids: np.ndarray, segments: list[dict]) -> tuple[list[int], np.ndarray]:
    """Oracle: the (labels, (N, H, W) masks) of the non-crowd things visible in ``ids``."""
    things = [s for s in segments if s["isthing"] and not s["iscrowd"]]
    masks = [ids == s["id"] for s in things]
    kept = [(s["category_id"], m) for s, m in zip(things, masks) if m.any()]
    labels = [label for label, _ in kept]
    return labels, np.array([m for _, m in kept], np.uint8).reshape(-1, *ids.shape)


@settings(max_examples=150)
@given(
    hw=image_sizes(),
    pipeline=pipelines(photometric=False),
    void_share=IGNORE_SHARES,
    seed=SEEDS,
)
def test_panoptic_mapper(folder, hw, pipeline, void_share, seed):
    rng = np.random.default_rng(seed)
    ids, segments = _segments(rng, hw, void_share)
    d, image = _sample(folder, hw, pipeline)
    d["pan_seg_file_name"] = _write(folder / "panoptic.png", id2rgb(ids)[..., ::-1])
    d["segments_info"] = segments
    out, rows, cols, resized = _map(TrackedPanoptic, d, PANOPTIC_METADATA, pipeline, seed)
    out_ids = moved(ids, rows, cols, out["sem_seg"].shape, 0)

    semantic = np.full(out_ids.shape, IGNORE, np.uint8)  # oracle: things 0, stuff 1 + id
    for s in segments:
        semantic[out_ids == s["id"]] = 0 if s["isthing"] else 1 + s["category_id"]
    _check_map(out, "sem_seg", semantic)

    instances = out["instances"]
    labels, masks = _expected_instances(out_ids, segments)
    n = len(labels)
    assert instances["boxes"].dtype == torch.float32 and instances["boxes"].shape == (n, 4)
    assert instances["labels"].dtype == torch.int64 and instances["labels"].tolist() == labels
    assert instances["masks"].dtype == torch.uint8
    assert np.array_equal(instances["masks"].numpy(), masks)
    for box, mask in zip(instances["boxes"].tolist(), masks):
        rows_in, cols_in = np.nonzero(mask)  # the tight box, at least one pixel a side
        assert box == [cols_in.min(), rows_in.min(), cols_in.max() + 1, rows_in.max() + 1]
    if n == 0 and _expected_instances(ids, segments)[0]:
        event("the transform removed every instance")
    check_image(out["image"].permute(1, 2, 0).numpy(), image, rows, cols, resized)


MULTITASK_METADATA = Metadata("fuzzed_multitask").set(
    **multitask_metadata(
        classes={
            "object": [(3, "person"), (300, "table"), (7, "car")],
            "part": [(12, "leg"), (513, "head")],
            "material": [(20, "wood"), (21, "skin")],
            "scene": [(40, "kitchen")],
            "texture": [(60, "striped")],
        },
        part_hierarchy=[("person", "head"), ("person", "leg"), ("table", "leg")],
        sources=[{"name": "fuzz", "tasks": ["object", "part", "material"], "size": 1}],
    )
)
TASK_SETS = st.sampled_from(
    [["object", "part", "material", "scene"], ["object", "scene"], ["object", "part"],
     ["material"], ["texture"]]
)  # fmt: skip
NUMBERS = {"object": [3, 300, 7], "part": [12, 513], "material": [20, 21]}


def _write_numbers(path: Path, numbers: np.ndarray) -> str:
    """A Broden label PNG: R + 256 * G = ``numbers``."""
    bgr = np.zeros((*numbers.shape, 3), np.uint8)
    bgr[..., 2], bgr[..., 1] = numbers % 256, numbers // 256
    return _write(path, bgr)


@settings(max_examples=150)
@given(
    hw=image_sizes(),
    pipeline=pipelines(photometric=False),
    tasks=TASK_SETS,
    unlabelled_share=IGNORE_SHARES,
    seed=SEEDS,
)
def test_multitask_mapper(folder, hw, pipeline, tasks, unlabelled_share, seed):
    rng = np.random.default_rng(seed)
    d, image = _sample(folder, hw, pipeline)
    d.update(source="fuzz", tasks=tasks, scene=0, texture=0)
    source: dict[str, np.ndarray] = {}  # train ids, through the one reader (not geometry)
    for task in ("object", "part", "material"):
        if task in tasks:
            which = random_labels(rng, hw, np.arange(len(NUMBERS[task])), 0.0)
            numbers = np.array(NUMBERS[task])[which]
            numbers[rng.random(hw) < unlabelled_share] = 0
            d[f"{task}_file_name"] = _write_numbers(folder / f"{task}.png", numbers)
            source[task] = read_multitask_label(
                d[f"{task}_file_name"], MULTITASK_METADATA, task, objects=source.get("object")
            )
    out, rows, cols, resized = _map(TrackedMultiTask, d, MULTITASK_METADATA, pipeline, seed)
    assert {k for k in ("object", "part", "material") if k in out} == set(source)
    for task, train_ids in source.items():
        _check_map(out, task, moved(train_ids, rows, cols, out[task].shape, IGNORE))
    if "object" in out:
        assert set(out["object"].unique().tolist()) <= {0, 1, 2, IGNORE}
    if "material" in out:
        assert set(out["material"].unique().tolist()) <= {0, 1, IGNORE}
    if "part" in out:  # a part id belongs to the object of its pixel
        objects, parts = out["object"].numpy(), out["part"].numpy()
        for k, owned in enumerate(MULTITASK_METADATA.object_parts):
            assert set(np.unique(parts[objects == k]).tolist()) <= {*owned, IGNORE}
        assert (parts[objects == IGNORE] == IGNORE).all()
    assert out["scene"] == 0 and out["texture"] == 0
    check_image(out["image"].permute(1, 2, 0).numpy(), image, rows, cols, resized)
