"""PanopticFPN: losses, gradients, outputs, loss weights, head swap, parameter count."""

import pytest
import torch

from uper_parsing.config import get_cfg
from uper_parsing.modeling import build_model

NUM_THINGS, NUM_STUFF = 3, 4
INSTANCE_LOSSES = {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask"}


def tiny_cfg():
    cfg = get_cfg()
    cfg.merge_from_file("configs/coco_panoptic/Base-Panoptic-FPN.yaml")
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[8], [16], [32], [64], [128]]
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 64
    cfg.MODEL.RPN.POST_NMS_TOPK_TEST = 64
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = NUM_THINGS
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 16
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 2
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = NUM_STUFF + 1
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 32
    cfg.MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT = 16
    return cfg


def _instances(boxes, labels, hw):
    masks = torch.zeros(len(boxes), *hw, dtype=torch.uint8)
    for m, (x1, y1, x2, y2) in zip(masks, boxes):
        m[y1:y2, x1:x2] = 1
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": masks,
    }


def _batch(hw=(61, 75)):
    g = torch.Generator().manual_seed(0)
    sem = torch.randint(0, NUM_STUFF + 1, hw, generator=g)
    sem[0, :5] = 255
    return [
        {
            "image": torch.randint(0, 256, (3, *hw), dtype=torch.uint8, generator=g),
            "sem_seg": sem,
            "instances": _instances([[5, 6, 30, 40], [40, 10, 70, 30]], [0, 2], hw),
        },
        {  # no instances: trains the semantic branch and the background only
            "image": torch.randint(0, 256, (3, *hw), dtype=torch.uint8, generator=g),
            "sem_seg": sem.flip(1),
            "instances": _instances([], [], hw),
        },
    ]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_cfg())


def _losses(model, batch, seed=0):
    model.train()
    torch.manual_seed(seed)
    return model(batch)


def test_training_losses_and_every_parameter_gets_a_gradient(model):
    losses = _losses(model, _batch())
    assert set(losses) == INSTANCE_LOSSES | {"loss_sem_seg"}
    for name, value in losses.items():
        assert value.dim() == 0 and torch.isfinite(value), name
    model.zero_grad()
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


def test_loss_weights_scale_their_losses():
    torch.manual_seed(0)
    base = build_model(tiny_cfg())
    cfg = tiny_cfg()
    cfg.MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT = 2.0
    cfg.MODEL.SEM_SEG_HEAD.LOSS_WEIGHT = 0.25
    weighted = build_model(cfg)
    weighted.load_state_dict(base.state_dict())
    a, b = _losses(base, _batch()), _losses(weighted, _batch())
    for name in ("loss_cls", "loss_box_reg", "loss_mask"):
        torch.testing.assert_close(b[name], 2 * a[name])
    for name in ("loss_rpn_cls", "loss_rpn_loc"):  # detectron2: the RPN is never scaled
        torch.testing.assert_close(b[name], a[name])
    torch.testing.assert_close(b["loss_sem_seg"], a["loss_sem_seg"] / 2)  # 0.5 -> 0.25


def test_inference_outputs_at_the_requested_size(model):
    model.eval()
    image = _batch()[0]["image"]
    with torch.no_grad():
        (out,) = model([{"image": image, "height": 122, "width": 150}])
    assert out["sem_seg"].shape == (NUM_STUFF + 1, 122, 150)
    inst = out["instances"]
    n = inst["boxes"].shape[0]
    assert n > 0  # score threshold 0: an untrained model still detects something
    assert inst["masks"].shape == (n, 122, 150) and inst["masks"].dtype == torch.bool
    assert inst["labels"].min() >= 0 and inst["labels"].max() < NUM_THINGS
    assert (inst["boxes"][:, 2] <= 150).all() and (inst["boxes"][:, 3] <= 122).all()
    seg, info = out["panoptic_seg"]
    assert seg.shape == (122, 150) and seg.dtype == torch.int32
    assert sorted(s["id"] for s in info) == list(range(1, len(info) + 1))
    for s in info:
        assert int((seg == s["id"]).sum()) == s["area"]
        limit = NUM_THINGS if s["isthing"] else NUM_STUFF
        assert 0 <= s["category_id"] < limit


def test_combine_can_be_disabled():
    cfg = tiny_cfg()
    cfg.MODEL.PANOPTIC_FPN.COMBINE.ENABLED = False
    model = build_model(cfg).eval()
    with torch.no_grad():
        (out,) = model([{"image": _batch()[0]["image"]}])
    assert set(out) == {"sem_seg", "instances"}


def test_semantic_head_is_one_config_line():
    cfg = tiny_cfg()
    cfg.MODEL.SEM_SEG_HEAD.NAME = "UPerNetHead"
    model = build_model(cfg)
    assert type(model.sem_seg_head).__name__ == "UPerNetHead"
    assert set(_losses(model, _batch())) == INSTANCE_LOSSES | {"loss_sem_seg"}


def test_missing_instances_is_a_clear_error(model):
    batch = _batch()
    del batch[1]["instances"]
    with pytest.raises(ValueError, match="training input 1 .* has no 'instances'"):
        _losses(model, batch)


def test_anchor_config_mismatch_is_a_clear_error():
    cfg = tiny_cfg()
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64]]
    with pytest.raises(ValueError, match="MODEL.ANCHOR_GENERATOR has 2 SIZES"):
        build_model(cfg)


def test_training_reduces_the_loss_on_one_batch():
    torch.manual_seed(0)
    model = build_model(tiny_cfg())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = _batch()
    first = None
    for step in range(12):
        losses = _losses(model, batch, seed=step)
        total = sum(losses.values())
        first = float(total.detach()) if first is None else first
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
    assert float(total.detach()) < 0.7 * first


def test_panoptic_fpn_r50_parameter_count():
    """detectron2's Panoptic FPN R50 (80 things, 53 stuff + "things"): 46.0M parameters."""
    cfg = get_cfg()
    cfg.merge_from_file("configs/coco_panoptic/panoptic_fpn_R50_1x.yaml")
    cfg.MODEL.DEVICE = "cpu"
    count = sum(p.numel() for p in build_model(cfg).parameters())
    assert count == 45_978_347
    assert abs(count - 46.0e6) / 46.0e6 < 0.02


def test_channels_last_model_computes_the_same(check_channels_last):
    def build(channels_last: bool):
        cfg = tiny_cfg()
        cfg.MODEL.CHANNELS_LAST = channels_last
        return build_model(cfg)

    test_batch = [{"image": x["image"], "height": 40, "width": 50} for x in _batch()]
    check_channels_last(build, _batch(), test_batch)
