"""INPUT.INTERPOLATION: torchvision's antialiased bilinear or PIL's bilinear (detectron2's)."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from uper_parsing.config import get_cfg
from uper_parsing.data import ResizeRatioRange, ResizeShortestEdge, apply_transforms
from uper_parsing.data.transforms import build_augmentation


def _sample(hw=(45, 61), channels=3, seed=0):
    rng = np.random.default_rng(seed)
    image = tv_tensors.Image(torch.from_numpy(rng.integers(0, 256, (channels, *hw), np.uint8)))
    labels = {"sem_seg": tv_tensors.Mask(torch.from_numpy(rng.integers(0, 5, hw, np.uint8)))}
    return image, labels


def _pil_resize(image: torch.Tensor, hw) -> np.ndarray:
    """detectron2's ResizeTransform.apply_image on the HWC uint8 array. Returns (C, h, w)."""
    hwc = image.permute(1, 2, 0).numpy()
    if hwc.shape[2] == 1:
        resized = np.asarray(
            Image.fromarray(hwc[:, :, 0], mode="L").resize(hw[::-1], Image.BILINEAR)
        )
        return resized[None]
    return np.asarray(Image.fromarray(hwc).resize(hw[::-1], Image.BILINEAR)).transpose(2, 0, 1)


RESIZES = {  # (45, 61) -> (30, 41), or (90, 122) for the upscale; kwargs: interpolation
    "shortest_edge_down": lambda **kw: ResizeShortestEdge(short_edge_length=30, **kw),
    "shortest_edge_up": lambda **kw: ResizeShortestEdge(short_edge_length=90, **kw),
    "ratio_range": lambda **kw: ResizeRatioRange(scale=(82, 60), ratio_range=(0.5, 0.5), **kw),
}


@pytest.mark.parametrize("resize", sorted(RESIZES))
@pytest.mark.parametrize("channels", [3, 1])
def test_pil_bilinear_equals_pil_resize(resize, channels):
    image, labels = _sample(channels=channels)
    out, out_labels = apply_transforms(RESIZES[resize](interpolation="pil_bilinear"), image, labels)
    assert isinstance(out, tv_tensors.Image) and out.dtype == torch.uint8
    hw = tuple(out.shape[-2:])
    assert hw in {(30, 41), (90, 122)}
    np.testing.assert_array_equal(out.numpy(), _pil_resize(image, hw))


def test_the_interpolations_differ_where_torchvision_rounds_otherwise():
    # torchvision's antialiased bilinear on uint8 is within one grey level of PIL's; on this
    # downscale some values differ, so the "pil_bilinear" path is really another one.
    image, _ = _sample()
    pil, _ = apply_transforms(RESIZES["shortest_edge_down"](interpolation="pil_bilinear"), image)
    default, _ = apply_transforms(RESIZES["shortest_edge_down"](), image)
    diff = (pil.int() - default.int()).abs()
    assert diff.max() == 1 and 0 < int((diff > 0).sum()) < diff.numel() // 20


@pytest.mark.parametrize("resize", sorted(RESIZES))
def test_label_maps_stay_nearest(resize):
    image, labels = _sample()
    _, pil_labels = apply_transforms(RESIZES[resize](interpolation="pil_bilinear"), image, labels)
    _, default_labels = apply_transforms(RESIZES[resize](), image, labels)
    hw = list(pil_labels["sem_seg"].shape)
    nearest = TF.resize(labels["sem_seg"], hw, interpolation=v2.InterpolationMode.NEAREST)
    assert isinstance(pil_labels["sem_seg"], tv_tensors.Mask)
    torch.testing.assert_close(pil_labels["sem_seg"], nearest, rtol=0, atol=0)
    torch.testing.assert_close(default_labels["sem_seg"], nearest, rtol=0, atol=0)


@pytest.mark.parametrize("resize", sorted(RESIZES))
def test_default_is_torchvision_antialiased_bilinear(resize):
    image, labels = _sample()
    default, _ = apply_transforms(RESIZES[resize](), image, labels)
    named, _ = apply_transforms(RESIZES[resize](interpolation="bilinear"), image, labels)
    expected = TF.resize(
        image, list(default.shape[-2:]), interpolation=v2.InterpolationMode.BILINEAR, antialias=True
    )
    torch.testing.assert_close(default, expected, rtol=0, atol=0)
    torch.testing.assert_close(named, expected, rtol=0, atol=0)


def test_unknown_interpolation_is_rejected():
    with pytest.raises(ValueError, match=r"interpolation must be one of \['bilinear', 'pil_b"):
        ResizeShortestEdge(short_edge_length=30, interpolation="bicubic")
    with pytest.raises(ValueError, match="interpolation must be one of"):
        ResizeRatioRange(scale=(82, 60), ratio_range=(1, 1), interpolation="nearest")


def test_pil_bilinear_needs_uint8_images():
    image = tv_tensors.Image(torch.rand(3, 45, 61))
    with pytest.raises(ValueError, match="'pil_bilinear' resizes uint8 images"):
        apply_transforms(
            ResizeShortestEdge(short_edge_length=30, interpolation="pil_bilinear"), image
        )


def _resizes(augmentation) -> list:
    steps = augmentation.transforms if augmentation is not None else []
    return [t for t in steps if isinstance(t, (ResizeShortestEdge, ResizeRatioRange))]


@pytest.mark.parametrize("interpolation", ["bilinear", "pil_bilinear"])
@pytest.mark.parametrize("resize_type", ["ratio_range", "choice"])
def test_build_augmentation_passes_the_interpolation(interpolation, resize_type):
    cfg = get_cfg()
    cfg.INPUT.INTERPOLATION = interpolation
    cfg.INPUT.RESIZE_TYPE = resize_type
    for is_train in (True, False):
        (resize,) = _resizes(build_augmentation(cfg, is_train))
        assert resize.interpolation == interpolation


def test_build_augmentation_rejects_an_unknown_interpolation():
    cfg = get_cfg()
    cfg.INPUT.INTERPOLATION = "bicubic"
    for is_train in (True, False):
        with pytest.raises(
            ValueError, match=r"INPUT.INTERPOLATION = 'bicubic' is not one of \['bilinear', 'pil_"
        ):
            build_augmentation(cfg, is_train)
    cfg.INPUT.MIN_SIZE_TEST = 0  # no test resize: still rejected, not silently ignored
    with pytest.raises(ValueError, match="INPUT.INTERPOLATION"):
        build_augmentation(cfg, False)
