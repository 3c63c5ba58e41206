"""PrRoIPool over the whole map (CSAIL's unified-parsing PPM) against a brute-force integral.

The oracle follows the CUDA kernel's definition (``prroi_pooling_gpu_impl.cu``), not our closed
form: pixel (h, w) sits at coordinate (h, w); the map is interpolated bilinearly from its four
neighbours, a neighbour outside the map counting as 0; each bin of the RoI (0, 0, W, H) is the
mean of that function over the bin, here by the midpoint rule on a fine grid.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uper_parsing.modeling.sem_seg_heads import PPM, PrRoIPool2d, UPerNetHead
from uper_parsing.modeling.sem_seg_heads.ppm import prroi_pool_weights

SAMPLES = 1200  # grid points per axis over the whole map (a multiple of every bin count used)


def _interpolate(data: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Bilinear interpolant of data (H, W) at points (y, x), zero outside the map."""
    height, width = data.shape
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    out = np.zeros(np.broadcast(y, x).shape)
    for dy in (0, 1):
        for dx in (0, 1):
            yy, xx = y0 + dy, x0 + dx
            inside = (yy >= 0) & (yy < height) & (xx >= 0) & (xx < width)
            value = np.where(inside, data[yy.clip(0, height - 1), xx.clip(0, width - 1)], 0.0)
            out += value * (1 - np.abs(y - yy)) * (1 - np.abs(x - xx))
    return out


def _brute_force_prroi(data: np.ndarray, bins: int) -> np.ndarray:
    """(bins, bins) means of the interpolant over the bins of [0, H] x [0, W]."""
    height, width = data.shape
    ys = (np.arange(SAMPLES) + 0.5) * height / SAMPLES
    xs = (np.arange(SAMPLES) + 0.5) * width / SAMPLES
    values = _interpolate(data, ys[:, None], xs[None, :])
    per = SAMPLES // bins
    return values.reshape(bins, per, bins, per).mean(axis=(1, 3))


@pytest.mark.parametrize("size", [(4, 6), (5, 7), (3, 2)])  # (5, 7), (3, 2): not divisible
@pytest.mark.parametrize("bins", [1, 2, 3, 6])
def test_prroi_equals_brute_force_integral(size, bins):
    x = torch.randn(1, 2, *size, generator=torch.Generator().manual_seed(bins), dtype=torch.float64)
    ours = PrRoIPool2d(bins)(x)
    assert ours.shape == (1, 2, bins, bins)
    for c in range(2):
        expected = _brute_force_prroi(x[0, c].numpy(), bins)
        np.testing.assert_allclose(ours[0, c].numpy(), expected, atol=1e-4)


def test_prroi_of_a_constant_map_loses_the_half_pixel_past_the_last_centre():
    """Hand-worked: on a map of ones the weights of the last bin along an axis of L pixels in B
    bins sum to 1 - 0.5 * B / L (the interpolant falls to 0 over [L - 1, L]); the others to 1."""
    ones = torch.ones(1, 1, 4, 5)
    pooled = PrRoIPool2d(2)(ones)[0, 0]
    row_sums = torch.tensor([1.0, 1 - 0.5 * 2 / 4])
    col_sums = torch.tensor([1.0, 1 - 0.5 * 2 / 5])
    torch.testing.assert_close(pooled, row_sums[:, None] * col_sums[None, :])
    torch.testing.assert_close(PrRoIPool2d(1)(ones), torch.full((1, 1, 1, 1), 0.875 * 0.9))


def test_prroi_weights_are_a_partition_of_each_bin():
    weights = prroi_pool_weights(7, 3)
    assert weights.shape == (3, 7) and (weights >= 0).all()
    torch.testing.assert_close(
        weights.sum(dim=1), torch.tensor([1.0, 1.0, 1 - 0.5 * 3 / 7], dtype=torch.float64)
    )


def test_ppm_pools_with_prroi_and_rejects_unknown_pools():
    ppm = PPM(8, 4, pool_scales=(1, 3), norm="", pool="prroi", conv_after_upsample=True).eval()
    assert isinstance(ppm.branches[1][0], PrRoIPool2d)
    assert ppm(torch.randn(1, 8, 7, 5)).shape == (1, 16, 7, 5)
    avg = PPM(8, 4, pool_scales=(1, 3), norm="").eval()
    assert set(avg.state_dict()) == set(ppm.state_dict())  # same parameters: checkpoints fit both
    with pytest.raises(ValueError, match="'max' is not one of"):
        PPM(8, 4, pool="max")


def test_ppm_pool_config_reaches_the_heads(tiny_cfg):
    from uper_parsing.layers import ShapeSpec
    from uper_parsing.modeling import PSPHead

    cfg = tiny_cfg("UPerNetHead")
    cfg.MODEL.SEM_SEG_HEAD.PPM_POOL = "prroi"
    shapes = {f"res{k}": ShapeSpec(channels=8 * k, stride=2**k) for k in range(2, 6)}
    head = UPerNetHead(cfg, shapes)
    assert all(isinstance(b[0], PrRoIPool2d) for b in head.ppm.branches)
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["res5"]
    psp = PSPHead(cfg, {"res5": shapes["res5"]})
    assert all(isinstance(b[0], PrRoIPool2d) for b in psp.ppm.branches)
