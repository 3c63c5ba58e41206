"""demo.py writes a picture and a label map per input image, at the image's size."""

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_demo_writes_pictures_and_label_maps(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    sizes = {"a": (70, 90), "b": (64, 64)}
    for stem, (h, w) in sizes.items():
        cv2.imwrite(str(images / f"{stem}.jpg"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "demo.py"), "--config-file",
           "configs/quickstart/semantic_fpn_R18_synthetic.yaml", "--input", str(images),
           "--output", str(out), "MODEL.DEVICE", "cpu"]  # fmt: skip
    env = dict(os.environ, UPER_PARSING_DATASETS=str(tmp_path / "datasets"))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stem, (h, w) in sizes.items():
        labels = cv2.imread(str(out / f"{stem}_labels.png"), cv2.IMREAD_UNCHANGED)
        assert labels.shape == (h, w) and labels.max() < 10
        picture = cv2.imread(str(out / f"{stem}.png"))
        assert picture.shape[1] > 2 * w  # [image | prediction] side by side, upscaled
