"""Helpers shared by the data tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write_pair(root: Path, stem: str, image: np.ndarray, label: np.ndarray, image_ext=".png"):
    """Write ``root/images/<stem><ext>`` (RGB) and ``root/labels/<stem>.png``."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / "images" / f"{stem}{image_ext}"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(root / "labels" / f"{stem}.png"), label)


PALETTE = np.array(
    [(230, 25, 25), (25, 230, 25), (25, 25, 230), (230, 230, 25), (25, 230, 230), (230, 25, 230)],
    np.uint8,
)


def block_label(hw: tuple[int, int], block: int, num_classes: int, seed: int = 0) -> np.ndarray:
    """(H, W) uint8 label of random classes in ``block`` x ``block`` squares."""
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, num_classes, (hw[0] // block + 1, hw[1] // block + 1), dtype=np.uint8)
    return np.kron(grid, np.ones((block, block), np.uint8))[: hw[0], : hw[1]]


def image_from_label(label: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB image whose colour is ``PALETTE[label]`` (black on other values)."""
    image = np.zeros((*label.shape, 3), np.uint8)
    known = label < len(PALETTE)
    image[known] = PALETTE[label[known]]
    return image


def assert_aligned(image: np.ndarray, label: np.ndarray, tol: int = 6, margin: int = 2) -> int:
    """Check that ``image`` (H, W, 3) is ``PALETTE[label]`` away from label boundaries (pixels
    within ``margin`` of another class are skipped). Returns the number of pixels checked."""
    checked = 0
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    for c in range(len(PALETTE)):
        inner = cv2.erode((label == c).astype(np.uint8), kernel, borderType=cv2.BORDER_REPLICATE)
        inner = inner.astype(bool)
        diff = np.abs(image[inner].astype(int) - PALETTE[c].astype(int))
        assert diff.size == 0 or diff.max() <= tol, f"class {c}: image differs by {diff.max()}"
        checked += int(inner.sum())
    return checked
