"""tools/benchmark_peers.py: the peers of ``benchmark.py --compare`` build the network our config
describes and train one step on our batch. transformers' UperNet always runs; detectron2's Panoptic
FPN runs where detectron2's source is importable (an export of it on PYTHONPATH, with cloudpickle
and omegaconf), and is skipped otherwise."""

from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path

import pytest
import torch

from uper_parsing.config import get_cfg
from uper_parsing.modeling import build_model

ROOT = Path(__file__).resolve().parents[2]
NUM_CLASSES = 5
D2_LOSSES = {
    "loss_sem_seg",
    "loss_rpn_cls",
    "loss_rpn_loc",
    "loss_cls",
    "loss_box_reg",
    "loss_mask",
}


@pytest.fixture(scope="module")
def peers():
    spec = importlib.util.spec_from_file_location(
        "benchmark_peers", ROOT / "tools" / "benchmark_peers.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _upernet_cfg():
    """R-18 UPerNet, 32-channel head, 16-channel auxiliary head; no weight decay, so a parameter
    that moves in one step had a gradient."""
    cfg = get_cfg()
    overrides = ["MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.NORM", "BN"]
    overrides += ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", NUM_CLASSES, "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32]
    overrides += ["MODEL.AUX_HEAD.ENABLED", True, "MODEL.AUX_HEAD.CONVS_DIM", 16]
    overrides += ["SOLVER.WEIGHT_DECAY", 0.0, "SOLVER.WEIGHT_DECAY_NORM", 0.0]
    cfg.merge_from_list(overrides)
    return cfg


def _sem_seg_batch() -> list[dict]:
    """Two images, the second smaller and of odd size (padded into the batch)."""
    g = torch.Generator().manual_seed(0)
    batch = []
    for h, w in [(64, 64), (45, 58)]:
        image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
        label = torch.randint(0, NUM_CLASSES, (h, w), generator=g)
        label[:3] = 255
        batch.append({"image": image, "sem_seg": label})
    return batch


def _changed(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> set[str]:
    return {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}


def test_hf_upernet_inputs_are_prepared_as_ours(peers):
    batch = _sem_seg_batch()
    mean = torch.tensor([10.0, 20.0, 30.0]).view(-1, 1, 1)
    std = torch.tensor([2.0, 4.0, 5.0]).view(-1, 1, 1)
    pixels, labels = peers.hf_upernet_inputs(batch, mean, std, ignore_value=255)
    assert pixels.shape == (2, 3, 64, 64) and pixels.dtype == torch.float32
    assert labels.shape == (2, 64, 64) and labels.dtype == torch.int64
    torch.testing.assert_close(pixels[1, :, :45, :58], (batch[1]["image"] - mean) / std)
    assert pixels[1, :, 45:].abs().sum() == 0 and pixels[1, :, :, 58:].abs().sum() == 0
    assert torch.equal(labels[1, :45, :58], batch[1]["sem_seg"])
    assert (labels[1, 45:] == 255).all() and (labels[1, :, 58:] == 255).all()


def test_hf_upernet_step_trains_our_network(peers, caplog):
    cfg = _upernet_cfg()  # SEM_SEG_HEAD.DROPOUT stays 0.1, which transformers' head lacks
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING, logger="uper_parsing.benchmark.peers"):
        model, step = peers.hf_upernet_step(cfg, _sem_seg_batch(), device="cpu", amp_dtype=None)
    assert "MODEL.SEM_SEG_HEAD.DROPOUT is 0.1" in caplog.text
    assert model.training and model.config.num_labels == NUM_CLASSES
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in build_model(cfg).parameters()
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = step()
    assert set(losses) == {"total_loss"} and not losses["total_loss"].requires_grad
    assert math.isfinite(losses["total_loss"].item())
    assert _changed(model, before) == set(before)


def test_hf_upernet_step_rejects_another_head_by_name(peers):
    cfg = _upernet_cfg()
    cfg.MODEL.SEM_SEG_HEAD.NAME = "PSPHead"
    with pytest.raises(ValueError, match="MODEL.SEM_SEG_HEAD.NAME is 'PSPHead'"):
        peers.hf_upernet_step(cfg, _sem_seg_batch(), device="cpu", amp_dtype=None)


def _panoptic_item(g: torch.Generator, boxes: list[tuple[int, int, int, int]]) -> dict:
    """A 128 x 160 image whose rectangles are things 1 and 3, stuff 1..5 elsewhere, a void band."""
    h, w = 128, 160
    masks = torch.zeros(len(boxes), h, w, dtype=torch.uint8)
    for mask, (x0, y0, x1, y1) in zip(masks, boxes):
        mask[y0:y1, x0:x1] = 1
    sem_seg = torch.randint(1, 6, (h, w), generator=g)
    sem_seg[masks.bool().any(dim=0)] = 0
    sem_seg[:4] = 255
    instances = {
        "boxes": torch.tensor(boxes, dtype=torch.float32),
        "labels": torch.tensor([1, 3]),
        "masks": masks,
    }
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
    return {"image": image, "sem_seg": sem_seg, "instances": instances, "height": h, "width": w}


def test_detectron2_panoptic_step_trains_our_network(peers):
    pytest.importorskip("detectron2")
    cfg = get_cfg()
    cfg.merge_from_file(str(ROOT / "configs" / "quickstart" / "panoptic_fpn_R18_synthetic.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "SOLVER.WEIGHT_DECAY", 0.0])
    cfg.merge_from_list(["SOLVER.OPTIMIZER", "SGD", "SOLVER.CLIP_GRADIENTS.ENABLED", False])
    g = torch.Generator().manual_seed(0)
    batch = [
        _panoptic_item(g, [(10, 20, 60, 90), (70, 30, 150, 120)]),
        _panoptic_item(g, [(0, 0, 40, 40), (90, 50, 130, 127)]),
    ]
    inputs = peers.detectron2_inputs(batch)
    assert inputs[1]["instances"].gt_masks.tensor.dtype == torch.bool
    assert torch.equal(inputs[1]["instances"].gt_masks.tensor, batch[1]["instances"]["masks"] > 0)
    assert torch.equal(inputs[1]["instances"].gt_boxes.tensor, batch[1]["instances"]["boxes"])
    assert inputs[1]["instances"].gt_classes.tolist() == [1, 3]

    torch.manual_seed(0)
    model, step = peers.detectron2_panoptic_step(
        cfg, batch, device="cpu", amp_dtype=None, detectron2_root=None
    )
    assert model.training and model.roi_heads.num_classes == cfg.MODEL.ROI_HEADS.NUM_CLASSES
    torch.testing.assert_close(model.pixel_mean.flatten().tolist(), cfg.MODEL.PIXEL_MEAN)
    # the same network, less torchvision's background box regressor and background mask channel
    background = (cfg.MODEL.ROI_BOX_HEAD.FC_DIM + 1) * 4 + cfg.MODEL.ROI_MASK_HEAD.CONV_DIM + 1
    assert sum(p.numel() for p in build_model(cfg).parameters()) == background + sum(
        p.numel() for p in model.parameters()
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = step()
    assert set(losses) == D2_LOSSES
    assert all(math.isfinite(v.item()) for v in losses.values()), losses
    assert _changed(model, before) == set(before)


def test_detectron2_peer_weights_load_into_ours_and_give_its_outputs(peers):
    """``benchmark.py --compare detectron2`` starts ours from the peer's random weights: they fit
    our network (strictly) and both networks then detect the same boxes."""
    pytest.importorskip("detectron2")
    cfg = get_cfg()
    cfg.merge_from_file(str(ROOT / "configs" / "quickstart" / "panoptic_fpn_R18_synthetic.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.CHANNELS_LAST", False])
    torch.manual_seed(0)
    peer = peers.build_peer_model("detectron2", cfg, device="cpu", detectron2_root=None)
    ours = build_model(cfg)
    ours.load_state_dict(peers.peer_weights_as_ours("detectron2", peer))
    image = _panoptic_item(torch.Generator().manual_seed(0), [(10, 20, 60, 90), (70, 30, 150, 120)])
    inputs = [{k: image[k] for k in ("image", "height", "width")}]
    with torch.no_grad():
        mine = ours.eval()(inputs)[0]["instances"]
        theirs = peer.eval()(inputs)[0]["instances"]
    assert len(theirs) > 0
    torch.testing.assert_close(mine["boxes"], theirs.pred_boxes.tensor, atol=1e-3, rtol=1e-4)
    assert peers.peer_weights_as_ours("hf-upernet", peer) is None  # its cost ignores weights
