"""INPUT.INTERPOLATION "cv2_bilinear" (mmcv's imresize: cv2.resize INTER_LINEAR on uint8 images,
INTER_NEAREST on label maps) and the test resize against mmcv's rescale_size."""

import cv2
import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from uper_parsing.config import get_cfg
from uper_parsing.data import ResizeRatioRange, ResizeShortestEdge, apply_transforms
from uper_parsing.data.transforms import build_augmentation

RESIZES = {  # (45, 61) -> (30, 41), (90, 122) or (23, 31); kwargs: interpolation
    "shortest_edge_down": lambda **kw: ResizeShortestEdge(short_edge_length=30, **kw),
    "shortest_edge_up": lambda **kw: ResizeShortestEdge(short_edge_length=90, **kw),
    "ratio_range": lambda **kw: ResizeRatioRange(scale=(82, 60), ratio_range=(0.5, 0.5), **kw),
}


def _sample(hw=(45, 61), channels=3, seed=0):
    rng = np.random.default_rng(seed)
    image = tv_tensors.Image(torch.from_numpy(rng.integers(0, 256, (channels, *hw), np.uint8)))
    label = rng.integers(0, 150, hw).astype(np.int64)
    label[:5] = 255
    return image, {"sem_seg": tv_tensors.Mask(torch.from_numpy(label))}


@pytest.mark.parametrize("resize", sorted(RESIZES))
@pytest.mark.parametrize("channels", [3, 1])
def test_images_equal_cv2_inter_linear(resize, channels):
    image, labels = _sample(channels=channels)
    out, _ = apply_transforms(RESIZES[resize](interpolation="cv2_bilinear"), image, labels)
    assert isinstance(out, tv_tensors.Image) and out.dtype == torch.uint8
    height, width = out.shape[-2:]
    hwc = np.ascontiguousarray(image.permute(1, 2, 0).numpy())  # as mmcv holds an image
    expected = cv2.resize(hwc, (width, height), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(out.permute(1, 2, 0).numpy(), expected.reshape(height, width, -1))


@pytest.mark.parametrize("resize", sorted(RESIZES))
def test_label_maps_equal_cv2_inter_nearest(resize):
    image, labels = _sample()
    _, out = apply_transforms(RESIZES[resize](interpolation="cv2_bilinear"), image, labels)
    mask = out["sem_seg"]
    assert isinstance(mask, tv_tensors.Mask) and mask.dtype == torch.int64
    height, width = mask.shape
    source = labels["sem_seg"].numpy().astype(np.int32)
    expected = cv2.resize(source, (width, height), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(mask.numpy(), expected)


def test_cv2_differs_from_the_other_interpolations():
    image, _ = _sample()
    outputs = {
        name: apply_transforms(RESIZES["shortest_edge_down"](interpolation=name), image)[0]
        for name in ("cv2_bilinear", "pil_bilinear", "bilinear")
    }
    for other in ("pil_bilinear", "bilinear"):
        assert not torch.equal(outputs["cv2_bilinear"], outputs[other])


def test_cv2_bilinear_needs_uint8_images():
    with pytest.raises(ValueError, match="'cv2_bilinear' resizes uint8 images"):
        apply_transforms(
            ResizeShortestEdge(short_edge_length=30, interpolation="cv2_bilinear"),
            tv_tensors.Image(torch.rand(3, 45, 61)),
        )


def test_build_augmentation_passes_cv2_bilinear():
    cfg = get_cfg()
    cfg.INPUT.INTERPOLATION = "cv2_bilinear"
    for is_train in (True, False):
        steps = build_augmentation(cfg, is_train).transforms
        resizes = [t for t in steps if isinstance(t, (ResizeShortestEdge, ResizeRatioRange))]
        assert [t.interpolation for t in resizes] == ["cv2_bilinear"]


def mmcv_rescale_size(old_size, scale):
    """mmcv.image.geometric.rescale_size with a (long, short) tuple: (w, h) -> new (w, h)."""
    w, h = old_size
    scale_factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(w * float(scale_factor) + 0.5), int(h * float(scale_factor) + 0.5)


@pytest.mark.parametrize("scale", [(2048, 512), (2560, 640)])
def test_test_resize_equals_mmcv_rescale_size(scale):
    """The test resize (MIN_SIZE_TEST = short, MAX_SIZE_TEST = long) and mmcv's keep-ratio
    Resize(scale) pick the same size: 25,536 (h, w) pairs, portrait, landscape and square."""
    long_side, short_side = scale
    sizes = [(h, w) for h in range(16, 3200, 19) for w in range(16, 3200, 21)]
    for h, w in sizes:
        new_w, new_h = mmcv_rescale_size((w, h), scale)
        assert ResizeShortestEdge.output_size((h, w), short_side, long_side) == (new_h, new_w)
        assert ResizeRatioRange.output_size((h, w), long_side, short_side) == (new_h, new_w)
