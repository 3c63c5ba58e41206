import numpy as np
import pytest
import torch
from _data_helpers import assert_aligned, block_label, image_from_label
from torchvision import tv_tensors
from torchvision.transforms import v2

from uper_parsing.data import (
    PadTo,
    PhotometricDistortion,
    RandomCropCategoryArea,
    ResizeRatioRange,
    ResizeShortestEdge,
    apply_transforms,
)


def _sample(hw=(48, 64), block=8, seed=0):
    label = block_label(hw, block, 4, seed)
    image = tv_tensors.Image(torch.from_numpy(image_from_label(label)).permute(2, 0, 1))
    labels = {
        "sem_seg": tv_tensors.Mask(torch.from_numpy(label)),
        "part": tv_tensors.Mask(torch.from_numpy(label.astype(np.int64) * 10)),
    }
    return image, labels


def _check(image, labels):
    img = image.permute(1, 2, 0).numpy()
    sem = labels["sem_seg"].numpy()
    assert img.shape[:2] == sem.shape == labels["part"].shape
    np.testing.assert_array_equal(labels["part"].numpy(), sem.astype(np.int64) * 10)
    return assert_aligned(img, sem)


def test_ratio_range_output_size():
    # mmseg: 512 x 683 image, scale (2048, 512), ratio 1 -> short side 512
    assert ResizeRatioRange.output_size((512, 683), 2048, 512) == (512, 683)
    assert ResizeRatioRange.output_size((300, 400), 2048, 512) == (512, 683)
    assert ResizeRatioRange.output_size((100, 1000), 2048, 512) == (205, 2048)
    t = ResizeRatioRange(scale=(128, 64), ratio_range=(0.5, 0.5))
    image, labels = apply_transforms(t, *_sample())
    assert image.shape[-2:] == (32, 43)  # short side 48 -> 64 * 0.5


def test_shortest_edge_output_size():
    assert ResizeShortestEdge.output_size((480, 640), 240, 0) == (240, 320)
    assert ResizeShortestEdge.output_size((100, 1000), 200, 1000) == (100, 1000)
    t = ResizeShortestEdge(short_edge_length=(96,), max_size=100)
    image, labels = apply_transforms(t, *_sample())
    assert image.shape[-2:] == (75, 100) and labels["sem_seg"].shape == (75, 100)


@pytest.mark.parametrize("seed", range(4))
def test_geometry_keeps_image_and_labels_aligned(seed):
    torch.manual_seed(seed)
    pipeline = v2.Compose(
        [
            ResizeRatioRange(scale=(128, 96), ratio_range=(0.5, 2.0)),
            RandomCropCategoryArea(size=(40, 40), single_category_max_area=0.75),
            v2.RandomHorizontalFlip(0.5),
            PadTo(size=(40, 40)),
        ]
    )
    image, labels = apply_transforms(pipeline, *_sample(seed=seed))
    assert isinstance(image, tv_tensors.Image) and isinstance(labels["sem_seg"], tv_tensors.Mask)
    assert image.dtype == torch.uint8 and labels["sem_seg"].dtype == torch.uint8
    assert _check(image, labels) > 100
    assert set(labels["sem_seg"].unique().tolist()) <= {0, 1, 2, 3, 255}


def test_flip_moves_labels_with_image():
    image, labels = _sample()
    out_image, out_labels = apply_transforms(v2.RandomHorizontalFlip(1.0), image, labels)
    torch.testing.assert_close(out_image, image.flip(-1))
    torch.testing.assert_close(out_labels["sem_seg"], labels["sem_seg"].flip(-1))


def _halves(hw=(64, 100)):
    label = np.zeros(hw, np.uint8)
    label[:, hw[1] // 2 :] = 1
    return tv_tensors.Image(torch.zeros(3, *hw, dtype=torch.uint8)), {
        "sem_seg": tv_tensors.Mask(torch.from_numpy(label))
    }


def _largest_share(mask):
    counts = torch.bincount(mask.reshape(-1).long(), minlength=256)[:255]
    return float(counts.max() / counts.sum())


def test_category_area_limit_respected_when_possible():
    torch.manual_seed(0)
    # 60-wide crops of a half / half label: about 70 % of the offsets pass the limit
    limited = RandomCropCategoryArea(size=(32, 60), single_category_max_area=0.75)
    free = RandomCropCategoryArea(size=(32, 60), single_category_max_area=1.0)
    shares_limited = [_largest_share(limited(*_halves())[1]["sem_seg"]) for _ in range(60)]
    shares_free = [_largest_share(free(*_halves())[1]["sem_seg"]) for _ in range(60)]
    assert max(shares_limited) < 0.75
    assert max(shares_free) >= 0.75  # the limit is what keeps crops mixed


def test_category_area_ignores_ignore_label():
    torch.manual_seed(0)
    image, labels = _halves()
    labels["sem_seg"][:, :50] = 255  # only one real category left: no crop can pass
    crop = RandomCropCategoryArea(size=(32, 50), single_category_max_area=0.75, max_tries=3)
    out_image, out_labels = crop(image, labels)
    assert out_image.shape[-2:] == (32, 50) == out_labels["sem_seg"].shape


def test_crop_larger_than_image_keeps_image():
    image, labels = _sample(hw=(20, 30))
    out_image, out_labels = RandomCropCategoryArea(size=(64, 64))(image, labels)
    assert out_image.shape[-2:] == (20, 30)


def test_photometric_distortion_touches_image_only():
    image, labels = _sample()
    torch.manual_seed(1)
    changed = False
    for _ in range(5):
        out_image, out_labels = PhotometricDistortion()(image, labels)
        assert out_image.dtype == torch.uint8 and out_image.shape == image.shape
        assert isinstance(out_image, tv_tensors.Image)
        torch.testing.assert_close(out_labels["sem_seg"], labels["sem_seg"])
        changed |= not torch.equal(out_image, image)
    assert changed


def test_pad_fills_image_with_zero_and_labels_with_ignore():
    image, labels = _sample(hw=(30, 41))
    out_image, out_labels = PadTo(size_divisibility=16, label_fill=255)(image, labels)
    assert out_image.shape[-2:] == (32, 48)
    assert (out_image[:, 30:, :] == 0).all() and (out_image[:, :, 41:] == 0).all()
    assert (out_labels["sem_seg"][30:, :] == 255).all() and (
        out_labels["part"][:, 41:] == 255
    ).all()
    torch.testing.assert_close(out_labels["sem_seg"][:30, :41], labels["sem_seg"])
    same_image, _ = PadTo(size=(20, 20))(image, labels)
    assert same_image.shape[-2:] == (30, 41)
