"""``resize_to``'s matrix-product form computes what ``F.interpolate`` (bilinear,
``align_corners=False``) computes: values and gradients, both memory layouts, every size kind."""

import pytest
import torch
import torch.nn.functional as F

from uper_parsing.config import get_cfg
from uper_parsing.layers.resize import (
    bilinear_matrix,
    get_resize_impl,
    resize_impl,
    resize_to,
    set_resize_impl,
)

SIZES = [  # (h, w) -> (H, W): up, down, mixed, odd, from and to one pixel, non-integer ratios
    ((32, 32), (512, 512)),
    ((7, 9), (45, 31)),
    ((45, 45), (7, 11)),
    ((1, 1), (5, 3)),
    ((5, 3), (1, 1)),
    ((13, 17), (13, 40)),
    ((64, 64), (33, 129)),
]


def _reference(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("hw, size", SIZES)
def test_matmul_equals_interpolate_in_float64(hw, size, channels_last):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, *hw, dtype=torch.float64, generator=gen)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    weight = torch.randn(2, 3, *size, dtype=torch.float64, generator=gen)
    with resize_impl("matmul"):
        out = resize_to(x, size)
    (grad,) = torch.autograd.grad((out * weight).sum(), x)
    expected = _reference(x, size)
    (expected_grad,) = torch.autograd.grad((expected * weight).sum(), x)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-13)
    torch.testing.assert_close(grad, expected_grad, rtol=0, atol=1e-12)
    if channels_last and hw != (1, 1):  # the layout is kept, so NHWC models stay NHWC
        assert out.is_contiguous(memory_format=torch.channels_last)


def test_matmul_in_float32_and_under_bfloat16_autocast():
    x = torch.randn(2, 150, 32, 32)
    expected = _reference(x.double(), (128, 128))
    with resize_impl("matmul"):
        out = resize_to(x, (128, 128))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = resize_to(x, (128, 128))
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=2e-5)
    assert low.dtype == torch.bfloat16  # the autocast dtype, as a convolution would return
    torch.testing.assert_close(low.double(), expected, rtol=2e-2, atol=2e-2)


def test_bilinear_matrix_rows_are_two_tap_and_sum_to_one():
    w = bilinear_matrix(45, 7)
    assert w.shape == (45, 7) and ((w != 0).sum(1) <= 2).all()
    torch.testing.assert_close(w.sum(1), torch.ones(45, dtype=torch.float64))
    # output pixel 10 of 45 samples 7 / 45 * 10.5 - 0.5 = 1.1333 (between input pixels 1 and 2)
    torch.testing.assert_close(
        w[10, 1:3], torch.tensor([0.8666666666666667, 0.1333333333333333], dtype=torch.float64)
    )


def test_impl_choice_and_errors():
    x = torch.randn(1, 2, 4, 4)
    assert resize_to(x, (4, 4)) is x
    assert get_resize_impl() == "auto"
    with resize_impl("interpolate"):
        assert get_resize_impl() == "interpolate"
    assert get_resize_impl() == "auto"
    with pytest.raises(ValueError, match="MODEL.RESIZE_IMPL must be one of"):
        set_resize_impl("bicubic")
    assert get_cfg().MODEL.RESIZE_IMPL == "auto"
