"""A checkpoint in detectron2's exact Panoptic FPN R50 layout runs here end to end: written from a
model of ours by an independent inverse of the conversion (detectron2's names, background class
last, no background slot in the box regressor and mask predictor), loaded through MODEL.WEIGHTS
it fills every tensor and gives our model's outputs exactly; `train_net.py --eval-only` and
`demo.py` run on it."""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torchvision.ops import FrozenBatchNorm2d

from uper_parsing.checkpoint import Checkpointer
from uper_parsing.config import get_cfg
from uper_parsing.modeling import build_model

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "configs/coco_panoptic/panoptic_fpn_R50_1x.yaml"
THINGS, STUFF = 5, 5  # the synthetic panoptic scenes
OVERRIDES = [
    "DATASETS.TRAIN", "('synthetic_scenes_panoptic_train',)",
    "DATASETS.TEST", "('synthetic_scenes_panoptic_val',)",
    "MODEL.ROI_HEADS.NUM_CLASSES", str(THINGS),
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES", str(STUFF + 1),
    "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "320",
    "MODEL.DEVICE", "cpu", "TEST.VIS_NUM_IMAGES", "1", "DATALOADER.NUM_WORKERS", "0",
    # a random model's 1000 proposals and 100 masks per image cost minutes on CI's CPU
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "50", "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
    "MODEL.ROI_HEADS.DETECTIONS_PER_IMAGE", "10",
]  # fmt: skip

_RESNET_NORMS = {"bn1": "conv1.norm", "bn2": "conv2.norm", "bn3": "conv3.norm"}


def _d2_name(key: str) -> str:
    """Our parameter name -> detectron2's (written from detectron2's module structure)."""
    if key.startswith("backbone.bottom_up."):
        key = key.replace("stem.bn1.", "stem.conv1.norm.")
        key = key.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")
        return re.sub(r"\.(bn[123])\.", lambda m: f".{_RESNET_NORMS[m.group(1)]}.", key)
    fpn = re.fullmatch(r"backbone\.(lateral|output)_convs\.(\d)\.conv\.(\w+)", key)
    if fpn:
        return f"backbone.fpn_{fpn.group(1)}{int(fpn.group(2)) + 2}.{fpn.group(3)}"
    for ours, theirs in (
        ("rpn.head.conv.0.0.", "proposal_generator.rpn_head.conv."),
        ("rpn.head.cls_logits.", "proposal_generator.rpn_head.objectness_logits."),
        ("rpn.head.bbox_pred.", "proposal_generator.rpn_head.anchor_deltas."),
        ("roi_heads.box_head.layers.1.", "roi_heads.box_head.fc1."),
        ("roi_heads.box_head.layers.3.", "roi_heads.box_head.fc2."),
        ("roi_heads.mask_predictor.conv5_mask.", "roi_heads.mask_head.deconv."),
        ("roi_heads.mask_predictor.mask_fcn_logits.", "roi_heads.mask_head.predictor."),
    ):
        if key.startswith(ours):
            return theirs + key[len(ours) :]
    mask = re.fullmatch(r"roi_heads\.mask_head\.(\d)\.0\.(\w+)", key)
    if mask:
        return f"roi_heads.mask_head.mask_fcn{int(mask.group(1)) + 1}.{mask.group(2)}"
    sem = re.fullmatch(r"sem_seg_head\.scale_heads\.(\d)\.(\d)\.(conv|norm)\.(\w+)", key)
    if sem:
        level, k, kind, param = sem.groups()
        norm = ".norm" if kind == "norm" else ""
        return f"sem_seg_head.p{int(level) + 2}.{2 * int(k)}{norm}.{param}"
    return key  # box_predictor.*, sem_seg_head.predictor.*


def to_detectron2(state_dict: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Our Panoptic FPN state dict in detectron2's layout: background last in the classifier,
    no background slot in the box regressor and the mask predictor."""
    out = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.startswith("roi_heads.box_predictor.cls_score."):
            value = torch.cat([value[1:], value[:1]])
        elif key.startswith("roi_heads.box_predictor.bbox_pred."):
            value = value[4:]
        elif key.startswith("roi_heads.mask_predictor.mask_fcn_logits."):
            value = value[1:]
        out[_d2_name(key)] = value.numpy().copy()
    return out


def _cfg():
    cfg = get_cfg()
    cfg.merge_from_file(str(ROOT / CONFIG))
    cfg.merge_from_list(OVERRIDES)
    return cfg


@pytest.fixture(scope="module")
def original_and_pkl(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(_cfg()).eval()
    with torch.no_grad():  # random weights + identity frozen norms on 0-255 input blow up the
        for module in model.backbone.bottom_up.modules():  # features: shrink every norm's scale
            if isinstance(module, FrozenBatchNorm2d):
                module.weight.mul_(0.25)
    path = tmp_path_factory.mktemp("d2") / "model_final_synthetic.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": to_detectron2(model.state_dict()), "__author__": "test"}, f)
    return model, path


def _background_slot(key: str) -> slice | None:
    if key.startswith("roi_heads.box_predictor.bbox_pred."):
        return slice(4, None)
    if key.startswith("roi_heads.mask_predictor.mask_fcn_logits."):
        return slice(1, None)
    return None


def test_detectron2_layout_fills_every_tensor_and_gives_our_outputs(original_and_pkl):
    original, path = original_and_pkl
    torch.manual_seed(1)  # other random values: every tensor must come from the file
    loaded = build_model(_cfg()).eval()
    Checkpointer(loaded).load(str(path))
    theirs = loaded.state_dict()
    for key, value in original.state_dict().items():
        rows = _background_slot(key)
        if rows is None:
            assert torch.equal(theirs[key], value), key
        else:  # detectron2 has no background slot: zero here, never read at inference
            assert (
                torch.equal(theirs[key][rows], value[rows]) and not theirs[key][: rows.start].any()
            )
    rng = np.random.default_rng(0)
    batch = [
        {"image": torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8))}
        for h, w in ((128, 160), (97, 130))
    ]
    with torch.no_grad():
        expected, got = original(batch), loaded(batch)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g["sem_seg"], e["sem_seg"], rtol=0, atol=0)
        assert len(e["instances"]["boxes"]) > 0
        for name in ("boxes", "scores", "labels", "masks"):
            torch.testing.assert_close(g["instances"][name], e["instances"][name], rtol=0, atol=0)
        torch.testing.assert_close(g["panoptic_seg"][0], e["panoptic_seg"][0], rtol=0, atol=0)
        assert g["panoptic_seg"][1] == e["panoptic_seg"][1]


def _run(script: str, datasets: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, UPER_PARSING_DATASETS=str(datasets))
    cmd = [sys.executable, str(ROOT / script), *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.mark.slow
def test_eval_only_and_demo_run_on_the_detectron2_file(
    original_and_pkl, tmp_path, synthetic_datasets
):
    _, path = original_and_pkl
    out = tmp_path / "eval"
    proc = _run(
        "train_net.py", synthetic_datasets, "--config-file", CONFIG, "--eval-only",
        "MODEL.WEIGHTS", str(path), "OUTPUT_DIR", str(out), *OVERRIDES,
    )  # fmt: skip
    assert "missing in the checkpoint" not in proc.stderr + proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert {"panoptic_seg", "bbox", "segm", "sem_seg"} <= set(results)
    assert 0 <= results["panoptic_seg"]["PQ"] <= 100
    images = tmp_path / "images"
    images.mkdir()
    frame = np.random.default_rng(1).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    cv2.imwrite(str(images / "a.jpg"), frame)
    demo_out = tmp_path / "demo"
    _run(
        "demo.py", synthetic_datasets, "--config-file", CONFIG, "--input", str(images),
        "--output", str(demo_out), "MODEL.WEIGHTS", f"file://{path}", *OVERRIDES,
    )  # fmt: skip
    assert (demo_out / "a_panoptic.png").exists() and (demo_out / "a_segments.json").exists()
