"""Property-based tests of the augmentation pipeline (``build_augmentation``) on random inputs:
images of 1 to 1024 px on each side, labels from empty (all ignore) to dense, any resize / crop /
flip / pad / interpolation. The image and every label map must stay aligned: checked against a
numpy oracle that tracks each output pixel's source pixel (``_geometry_oracle``)."""

from __future__ import annotations

import numpy as np
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
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision import tv_tensors

from uper_parsing.config import get_cfg
from uper_parsing.data.transforms import apply_transforms, build_augmentation

IGNORE_SHARES = st.sampled_from([0.0, 0.5, 0.95, 1.0])  # 1.0: an empty label map


def _run(pipeline: dict, image: np.ndarray, labels: dict[str, np.ndarray], seed: int):
    """The training ``pipeline`` (``INPUT`` keys) on (H, W, 3) ``image`` and (H, W) ``labels``,
    torch seeded with ``seed``. Returns the image (H', W', 3), the label maps as numpy arrays,
    and the size after the resize (None without one)."""
    transform = build_augmentation(train_cfg(pipeline), True, ignore_label=IGNORE)
    masks = {k: tv_tensors.Mask(torch.from_numpy(v)) for k, v in labels.items()}
    tensor = tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))
    torch.manual_seed(seed)
    out_image, out_labels = apply_transforms(transform, tensor, masks)
    assert isinstance(out_image, tv_tensors.Image) and out_image.dtype == torch.uint8
    for name, mask in out_labels.items():
        assert isinstance(mask, tv_tensors.Mask) and mask.dtype == masks[name].dtype, name
        assert mask.shape == out_image.shape[-2:], f"{name} {mask.shape} vs {out_image.shape}"
    resized = None
    if pipeline["RESIZE_TYPE"] != "none":
        resized = resized_size(transform, image.shape[:2], seed)
    out_labels = {k: v.numpy() for k, v in out_labels.items()}
    return out_image.numpy().transpose(1, 2, 0), out_labels, resized


@settings(max_examples=200)
@given(
    hw=image_sizes(),
    pipeline=pipelines(photometric=False),
    ignore_share=IGNORE_SHARES,
    seed=st.integers(0, 2**31 - 1),
)
def test_image_and_labels_stay_aligned(hw, pipeline, ignore_share, seed):
    """No crash at any size; every label map equals the source labels at the tracked pixels (the
    ignore label in the padding); the image equals the source image there (no resize: exactly;
    resized: within the bilinear kernel), 0 in the padding."""
    rng = np.random.default_rng(seed)
    classes = rng.choice(IGNORE, int(rng.integers(1, 20)), replace=False)
    sem_seg = random_labels(rng, hw, classes, ignore_share)
    exact = pipeline["RESIZE_TYPE"] == "none"
    image = coordinate_image(hw) if exact else ramp_image(hw)
    labels = {"sem_seg": sem_seg, **coordinate_maps(hw)}
    out_image, out, resized_hw = _run(pipeline, image, labels, seed)
    rows, cols = source_pixels(out[ROW], out[COL], hw)
    assert np.array_equal(out["sem_seg"], moved(sem_seg, rows, cols, out_image.shape[:2], IGNORE))
    check_image(out_image, image, rows, cols, resized_hw)


@settings(max_examples=100)
@given(
    hw=image_sizes(),
    pipeline=pipelines(photometric=True),
    ignore_share=IGNORE_SHARES,
    seed=st.integers(0, 2**31 - 1),
)
def test_photometric_distortion_leaves_labels_alone(hw, pipeline, ignore_share, seed):
    """With the photometric distortion, labels move exactly as without it, and the image keeps
    its shape and dtype (values 0..255 by construction of uint8)."""
    rng = np.random.default_rng(seed)
    sem_seg = random_labels(rng, hw, np.arange(5), ignore_share)
    image = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    out_image, out, _ = _run(pipeline, image, {"sem_seg": sem_seg, **coordinate_maps(hw)}, seed)
    rows, cols = source_pixels(out[ROW], out[COL], hw)
    assert out_image.shape[2] == 3
    assert np.array_equal(out["sem_seg"], moved(sem_seg, rows, cols, out_image.shape[:2], IGNORE))


@settings(max_examples=100)
@given(
    hw=image_sizes(),
    short=st.integers(1, 1024),
    max_size=st.sampled_from([0, 1, 100, 1333]),
    interpolation=st.sampled_from(["bilinear", "pil_bilinear", "cv2_bilinear"]),
)
def test_test_resize_keeps_the_aspect_ratio_within_a_pixel(hw, short, max_size, interpolation):
    """The test-time resize (short side to MIN_SIZE_TEST, long side capped at MAX_SIZE_TEST)
    returns at least one pixel a side and the source aspect ratio up to rounding."""
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = short, max_size
    cfg.INPUT.INTERPOLATION = interpolation
    image = tv_tensors.Image(torch.zeros(3, *hw, dtype=torch.uint8))
    out, _ = apply_transforms(build_augmentation(cfg, False), image)
    h, w = out.shape[-2:]
    assert h >= 1 and w >= 1
    scale = min(short / min(hw), max_size / max(hw)) if max_size > 0 else short / min(hw)
    assert abs(h - hw[0] * scale) <= 1 or h == 1
    assert abs(w - hw[1] * scale) <= 1 or w == 1
