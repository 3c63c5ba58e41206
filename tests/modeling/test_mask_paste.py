"""detectron2's mask paste and detector_postprocess against an independent numpy oracle."""

import numpy as np
import pytest
import torch

from uper_parsing.modeling import postprocessing
from uper_parsing.modeling.postprocessing import detector_postprocess, paste_masks_in_image

IMAGE_HW = (37, 53)
# Where the oracle's probability is this close to the threshold, float32 rounding may flip a pixel.
BAND = 1e-4


def _bilinear_zero_padded(mask: np.ndarray, v: np.ndarray, u: np.ndarray) -> np.ndarray:
    """mask (Mh, Mw) at rows v (h,) x columns u (w,) in cell units (cell centres at 0..M-1),
    bilinear, zero outside the mask."""
    padded = np.pad(mask.astype(np.float64), 2)
    v = np.clip(v, -1.0, mask.shape[0]) + 2  # beyond one cell outside, every neighbour is zero
    u = np.clip(u, -1.0, mask.shape[1]) + 2
    r0, c0 = np.floor(v).astype(int), np.floor(u).astype(int)
    fr, fc = (v - r0)[:, None], (u - c0)[None, :]
    r1, c1 = np.minimum(r0 + 1, padded.shape[0] - 1), np.minimum(c0 + 1, padded.shape[1] - 1)
    return (
        padded[np.ix_(r0, c0)] * (1 - fr) * (1 - fc)
        + padded[np.ix_(r0, c1)] * (1 - fr) * fc
        + padded[np.ix_(r1, c0)] * fr * (1 - fc)
        + padded[np.ix_(r1, c1)] * fr * fc
    )


def reference_probs(masks: np.ndarray, boxes: np.ndarray, hw) -> np.ndarray:
    """detectron2's paste as its docs describe it: each pixel centre is mapped into the box,
    which spans the whole mask, and the mask is read there bilinearly. Returns (N, H, W) float64."""
    out = np.zeros((len(masks), *hw))
    ys, xs = np.arange(hw[0]) + 0.5, np.arange(hw[1]) + 0.5
    for k, (mask, (x0, y0, x1, y1)) in enumerate(zip(masks, boxes.astype(np.float64))):
        if not (x1 > x0 and y1 > y0):
            continue
        u = (xs - x0) / (x1 - x0) * mask.shape[1] - 0.5
        v = (ys - y0) / (y1 - y0) * mask.shape[0] - 0.5
        out[k] = _bilinear_zero_padded(mask, v, u)
    return out


def _boxes(hw=IMAGE_HW) -> torch.Tensor:
    h, w = hw
    return torch.tensor(
        [
            [3.3, 4.7, 20.1, 30.9],  # inside
            [0.0, 0.0, w, h],  # the whole image, edges on the image edges
            [0.0, 10.0, 12.5, h],  # on the left and bottom edges
            [-8.2, -5.5, 9.4, 7.1],  # partly outside, top left
            [40.6, 25.2, w + 9.7, h + 4.4],  # partly outside, bottom right
            [10.2, 11.1, 10.7, 11.4],  # smaller than a pixel, covering a pixel centre
            [20.6, 20.6, 20.9, 20.9],  # smaller than a pixel, between pixel centres
            [15.0, 15.0, 15.8, 27.0],  # thinner than a pixel
            [-30.0, -40.0, w + 25.0, h + 35.0],  # larger than the image
            [60.0, 40.0, 70.0, 50.0],  # outside the image
            [5.0, 5.0, 5.0, 9.0],  # empty
            [9.0, 9.0, 4.0, 12.0],  # inverted
        ]
    )


def _random_masks(n, size=7, seed=0) -> torch.Tensor:
    return torch.rand(n, size, size, generator=torch.Generator().manual_seed(seed))


def _random_boxes(n, hw=IMAGE_HW, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    corner = torch.rand(n, 2, generator=g) * torch.tensor([w + 20.0, h + 20.0]) - 10
    size = torch.rand(n, 2, generator=g) ** 2 * torch.tensor([w * 1.5, h * 1.5])
    return torch.cat([corner, corner + size], dim=1)


def _assert_matches_reference(pasted, probs, threshold):
    """Equal to the oracle wherever it is not within BAND of the threshold."""
    expected = probs >= threshold
    differ = pasted.numpy() != expected
    assert not (differ & (np.abs(probs - threshold) > BAND)).any()
    assert differ.sum() <= max(1, expected.size // 10_000)


@pytest.mark.parametrize("per_box", [True, False])
@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.8])
def test_paste_equals_reference_on_hand_made_boxes(per_box, threshold):
    boxes = _boxes()
    masks = _random_masks(len(boxes), seed=1)
    pasted = paste_masks_in_image(masks, boxes, IMAGE_HW, threshold, per_box=per_box)
    assert pasted.shape == (len(boxes), *IMAGE_HW) and pasted.dtype == torch.bool
    probs = reference_probs(masks.numpy(), boxes.numpy(), IMAGE_HW)
    _assert_matches_reference(pasted, probs, threshold)
    assert not pasted[-3:].any()  # outside, empty, inverted


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("mask_size", [28, 5])
def test_paste_equals_reference_on_random_boxes(seed, mask_size):
    boxes = _random_boxes(40, seed=seed)
    masks = _random_masks(40, mask_size, seed)
    probs = reference_probs(masks.numpy(), boxes.numpy(), IMAGE_HW)
    for per_box in (True, False):
        pasted = paste_masks_in_image(masks, boxes, IMAGE_HW, per_box=per_box)
        _assert_matches_reference(pasted, probs, 0.5)


def test_paste_of_hard_masks_is_exact():
    # 0 / 1 masks: the result is decided far from the threshold except at the box edges
    boxes = _random_boxes(30, seed=7)
    masks = (_random_masks(30, 6, seed=7) > 0.5).float()
    probs = reference_probs(masks.numpy(), boxes.numpy(), IMAGE_HW)
    _assert_matches_reference(paste_masks_in_image(masks, boxes, IMAGE_HW), probs, 0.5)


def test_full_mask_fills_the_pixels_whose_centre_is_in_the_box():
    # All-ones masks; no pixel centre lies within half a mask cell of two box edges, where the
    # product of the two edge weights (each 0.5 to 1) can fall below 0.5.
    boxes = torch.tensor([[2.2, 3.9, 11.4, 8.3], [-4.0, 30.1, 6.6, 45.0], [7.3, 7.3, 7.9, 7.9]])
    pasted = paste_masks_in_image(torch.ones(3, 28, 28), boxes, IMAGE_HW)
    expected = torch.zeros(3, *IMAGE_HW, dtype=torch.bool)
    expected[0, 4:8, 2:11] = True  # centres 4.5..7.5 and 2.5..10.5
    expected[1, 30:, :7] = True  # centres 30.5..36.5 and 0.5..6.5
    expected[2, 7, 7] = True  # a box of 0.6 px around the centre (7.5, 7.5)
    torch.testing.assert_close(pasted, expected)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("threshold", [0.5, 0.2, -1.0])
def test_per_box_and_full_image_paste_agree(seed, threshold):
    boxes = torch.cat([_boxes(), _random_boxes(30, seed=seed)])
    masks = _random_masks(len(boxes), 28, seed)
    per_box = paste_masks_in_image(masks, boxes, IMAGE_HW, threshold, per_box=True)
    full = paste_masks_in_image(masks, boxes, IMAGE_HW, threshold, per_box=False)
    torch.testing.assert_close(per_box, full, rtol=0, atol=0)


def test_full_image_paste_in_chunks(monkeypatch):
    boxes = _random_boxes(25, seed=3)
    masks = _random_masks(25, 28, seed=3)
    whole = paste_masks_in_image(masks, boxes, IMAGE_HW, per_box=False)
    # room for 2 masks per chunk
    monkeypatch.setattr(postprocessing, "PASTE_CHUNK_BYTES", 2 * 37 * 53 * 12 + 1)
    torch.testing.assert_close(paste_masks_in_image(masks, boxes, IMAGE_HW, per_box=False), whole)


def test_negative_threshold_returns_probabilities_as_uint8():
    boxes = _random_boxes(20, seed=4)
    masks = _random_masks(20, 28, seed=4)
    pasted = paste_masks_in_image(masks, boxes, IMAGE_HW, -1.0)
    assert pasted.dtype == torch.uint8
    expected = reference_probs(masks.numpy(), boxes.numpy(), IMAGE_HW) * 255
    # truncated like detectron2's (prob * 255).to(uint8); float32 may round across an integer
    diff = pasted.numpy().astype(np.float64) - np.floor(expected)
    near_integer = np.abs(expected - np.round(expected)) < 1e-3
    assert not (diff[~near_integer] != 0).any() and (np.abs(diff) <= 1).all()


def test_paste_of_no_masks():
    out = paste_masks_in_image(torch.zeros(0, 28, 28), torch.zeros(0, 4), IMAGE_HW)
    assert out.shape == (0, *IMAGE_HW) and out.dtype == torch.bool


def test_paste_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"masks \(N, M, M\) and boxes \(N, 4\)"):
        paste_masks_in_image(torch.zeros(2, 1, 28, 28), torch.zeros(2, 4), IMAGE_HW)
    with pytest.raises(ValueError, match="got \\(2, 28, 28\\) and \\(3, 4\\)"):
        paste_masks_in_image(torch.zeros(2, 28, 28), torch.zeros(3, 4), IMAGE_HW)


def _detections(boxes, masks):
    n = len(boxes)
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(n, 4),
        "scores": torch.linspace(0.9, 0.1, n),
        "labels": torch.arange(n),
        "masks": masks,
    }


def test_detector_postprocess_drops_boxes_empty_after_clipping():
    # network input 50 x 60 (h, w) -> output 100 x 90
    det = _detections(
        [
            [10.0, 20.0, 30.0, 40.0],  # kept
            [61.0, 10.0, 70.0, 20.0],  # right of the image: empty once clipped
            [10.0, 20.0, 10.0, 30.0],  # no width
            [5.0, -9.0, 25.0, -1.0],  # above the image
            [-5.0, 45.0, 20.0, 60.0],  # partly outside: kept, clipped
        ],
        _random_masks(5, 28, seed=5)[:, None],
    )
    out = detector_postprocess(det, (50, 60), 100, 90)
    torch.testing.assert_close(out["labels"], torch.tensor([0, 4]))
    torch.testing.assert_close(out["scores"], det["scores"][[0, 4]])
    torch.testing.assert_close(
        out["boxes"], torch.tensor([[15.0, 40.0, 45.0, 80.0], [0.0, 90.0, 30.0, 100.0]])
    )
    assert out["masks"].shape == (2, 100, 90) and out["masks"].dtype == torch.bool
    # the masks of the kept detections, pasted at the clipped boxes
    expected = paste_masks_in_image(det["masks"][[0, 4], 0], out["boxes"], (100, 90))
    torch.testing.assert_close(out["masks"], expected)


def test_detector_postprocess_of_no_detections():
    det = _detections([], torch.zeros(0, 1, 28, 28))
    out = detector_postprocess(det, (50, 60), 100, 90)
    assert out["boxes"].shape == (0, 4) and out["masks"].shape == (0, 100, 90)
    without_masks = {k: v for k, v in det.items() if k != "masks"}
    assert set(detector_postprocess(without_masks, (50, 60), 100, 90)) == {
        "boxes",
        "scores",
        "labels",
    }
