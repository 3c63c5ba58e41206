"""Strategies and a numpy oracle for the property tests of the transforms and the mappers.

The oracle tracks where every output pixel comes from: two extra label maps hold each source
pixel's row and column (plus ``OFFSET``, so that padding, which label maps get as the ignore
label, is no coordinate) and move through the same joint transform as the image and the labels.
Label maps are resized with nearest neighbour, so an aligned output holds, at every pixel, the
source labels at the tracked source pixel, and the ignore label in the padding.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st
from torchvision import tv_tensors

from uper_parsing.config import get_cfg
from uper_parsing.data.transforms import IMAGE_INTERPOLATIONS

IGNORE = 255
OFFSET = 256  # tracked coordinates are stored + 256: the padding value 255 is none of them
ROW, COL = "_row", "_col"


def coordinate_maps(hw: tuple[int, int]) -> dict[str, np.ndarray]:
    """{ROW, COL}: (H, W) int32 row / column index of each pixel, + OFFSET."""
    rows, cols = np.indices(hw, dtype=np.int32) + OFFSET
    return {ROW: rows, COL: cols}


@st.composite
def image_sizes(draw: st.DrawFn) -> tuple[int, int]:
    """(H, W), each 1..1024 px."""
    return draw(st.integers(1, 1024)), draw(st.integers(1, 1024))


@st.composite
def pipelines(draw: st.DrawFn, *, photometric: bool) -> dict[str, Any]:
    """``INPUT`` keys of a random training pipeline (see ``train_cfg``): any resize type at small
    and large scales, crops larger and smaller than the image (with and without the category-area
    limit), flips, padding to the crop or to a multiple, any interpolation; the photometric
    distortion only when ``photometric``."""
    long_side = draw(st.integers(1, 512))
    low = draw(st.sampled_from([0.1, 0.5, 1.0, 1.5]))
    return {
        "RESIZE_TYPE": draw(st.sampled_from(["ratio_range", "choice", "none"])),
        "RESIZE_SCALE": [long_side, draw(st.integers(1, long_side))],
        "RATIO_RANGE": [low, low * draw(st.sampled_from([1.0, 2.0]))],
        "MIN_SIZE_TRAIN": draw(st.lists(st.integers(1, 256), min_size=1, max_size=3)),
        "MAX_SIZE_TRAIN": draw(st.sampled_from([0, 1, 333, 512])),
        "CROP.ENABLED": draw(st.booleans()),
        "CROP.SIZE": [draw(st.integers(1, 300)), draw(st.integers(1, 300))],
        "CROP.SINGLE_CATEGORY_MAX_AREA": draw(st.sampled_from([1.0, 0.75, 0.3])),
        "RANDOM_FLIP": draw(st.sampled_from(["horizontal", "vertical", "none"])),
        "COLOR_AUG_SSD": photometric and draw(st.booleans()),
        "SIZE_DIVISIBILITY": draw(st.sampled_from([-1, 0, 7, 32])),
        "INTERPOLATION": draw(st.sampled_from(sorted(IMAGE_INTERPOLATIONS))),
    }


def train_cfg(pipeline: dict[str, Any]) -> Any:
    """The default config with ``INPUT.<key> = value`` for each item of ``pipeline``."""
    cfg = get_cfg()
    cfg.merge_from_list([item for k, v in pipeline.items() for item in (f"INPUT.{k}", v)])
    return cfg


def random_labels(
    rng: np.random.Generator, hw: tuple[int, int], values: np.ndarray, ignore_share: float
) -> np.ndarray:
    """(H, W) uint8 labels: blocks of random ``values`` (blocks of 1 to 64 px, so that the
    category-area limit of the crop sees regions), ``ignore_share`` of the pixels ``IGNORE``."""
    block = int(rng.integers(1, 65))
    grid = rng.choice(values, (hw[0] // block + 1, hw[1] // block + 1)).astype(np.uint8)
    labels = np.kron(grid, np.ones((block, block), np.uint8))[: hw[0], : hw[1]]
    labels[rng.random(hw) < ignore_share] = IGNORE
    return labels


def coordinate_image(hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 RGB that names each pixel: R = row % 256, G = col % 256,
    B = 4 * (row // 256) + col // 256 (distinct for every pixel of a 1024 x 1024 image)."""
    rows, cols = np.indices(hw)
    return np.stack([rows % 256, cols % 256, 4 * (rows // 256) + cols // 256], -1).astype(np.uint8)


def ramp_image(hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 RGB: R rises from 0 to 255 down the rows, G across the columns, B = 128;
    bilinear resizing keeps a linear ramp (nearly) linear, so the image can be checked against
    the tracked source pixels after a resize."""
    rows, cols = np.indices(hw, dtype=np.float64)
    r = 255 * rows / max(hw[0] - 1, 1)
    g = 255 * cols / max(hw[1] - 1, 1)
    return np.stack([r, g, np.full(hw, 128.0)], -1).round().astype(np.uint8)


def source_pixels(
    out_rows: np.ndarray, out_cols: np.ndarray, hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Check that the tracked coordinates after a transform describe resize / crop / flip / pad
    geometry of an (H, W) = ``hw`` source, and return the source row of each output row (vh,)
    and the source column of each output column (vw,) of the unpadded top-left (vh, vw) part.

    Geometry: the content is a top-left rectangle (padding bottom / right only), row indices
    depend on the output row only and column indices on the output column only, both monotone
    (a flip reverses them) and inside the source.
    """
    content = out_rows != IGNORE
    assert np.array_equal(content, out_cols != IGNORE), "row and column maps disagree on padding"
    vh, vw = int(content[:, 0].sum()), int(content[0].sum())
    assert vh >= 1 and vw >= 1, "no source pixel left"
    assert content[:vh, :vw].all() and int(content.sum()) == vh * vw, "padding is not bottom-right"
    rows, cols = out_rows[:vh, :vw].astype(np.int64) - OFFSET, out_cols[:vh, :vw] - OFFSET
    assert (rows == rows[:, :1]).all() and (cols == cols[:1]).all(), "geometry is not separable"
    rows, cols = rows[:, 0], cols[0].astype(np.int64)
    for index, size in ((rows, hw[0]), (cols, hw[1])):
        assert index.min() >= 0 and index.max() < size, "a coordinate outside the source"
        steps = np.diff(index)
        assert (steps >= 0).all() or (steps <= 0).all(), "coordinates not monotone"
    return rows, cols


def moved(source: np.ndarray, rows: np.ndarray, cols: np.ndarray, out_hw, fill) -> np.ndarray:
    """The oracle of a transformed map: ``source`` (H, W, ...) at the tracked pixels in the
    top-left (len(rows), len(cols)), ``fill`` in the padding. Returns (*out_hw, ...)."""
    out = np.full((*out_hw, *source.shape[2:]), fill, dtype=source.dtype)
    out[: len(rows), : len(cols)] = source[np.ix_(rows, cols)]
    return out


def resized_size(transform: Any, hw: tuple[int, int], seed: int) -> tuple[int, int]:
    """The size an (H, W) = ``hw`` image has after the first step of ``transform`` (a ``Compose``
    of ``build_augmentation``, whose resize, when it has one, is first and draws first) when
    torch's generator is seeded with ``seed``, as for the transformed sample."""
    torch.manual_seed(seed)
    image = tv_tensors.Image(torch.zeros(3, *hw, dtype=torch.uint8))
    return tuple(transform.transforms[0](image).shape[-2:])


def check_image(
    out: np.ndarray, image: np.ndarray, rows: np.ndarray, cols: np.ndarray, resized_hw=None
) -> None:
    """The transformed image ``out`` (H', W', 3) is the source ``image`` (H, W, 3) at the tracked
    pixels and 0 in the padding: exactly without a resize (``resized_hw`` None; use a
    ``coordinate_image``), else a ``ramp_image`` resized to ``resized_hw`` (then cropped,
    flipped, padded) is where the tracked pixels say: a bilinear sample and its nearest-neighbour
    source pixel are at most the scale (source pixels per resized pixel) + 2 source pixels apart."""
    padding = np.ones(out.shape[:2], bool)
    padding[: len(rows), : len(cols)] = False
    assert (out[padding] == 0).all(), "the image padding is not 0"
    if resized_hw is None:
        assert np.array_equal(out, moved(image, rows, cols, out.shape[:2], 0)), "image moved"
        return
    hw = image.shape[:2]
    for channel, index, size, resized in ((0, rows, hw[0], resized_hw[0]),
                                          (1, cols, hw[1], resized_hw[1])):  # fmt: skip
        if size == 1:
            continue
        tolerance = 255 / (size - 1) * (size / resized + 2) + 1  # grey levels
        expected = 255 * index / (size - 1)
        got = out[: len(rows), : len(cols), channel].astype(np.float64)
        got = got if channel == 1 else got.T  # (.., index) along the last axis
        assert np.abs(got - expected).max() <= tolerance, f"channel {channel} drifted"
    content = out[: len(rows), : len(cols), 2].astype(int)
    assert np.abs(content - 128).max() <= 1, "the constant channel changed"
