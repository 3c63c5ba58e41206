"""The instance branch computes detectron2's numerics: anchors, box coding under autocast, RoI
pooling levels, box / mask losses and initialisation (each against an independent oracle)."""

import math

import pytest
import torch
from torchvision.ops import roi_align

from uper_parsing.config import get_cfg
from uper_parsing.layers import ShapeSpec
from uper_parsing.modeling.instance_heads import (
    DefaultAnchorGenerator,
    ROIPooler,
    build_anchor_generator,
    build_roi_heads,
    build_rpn,
)

STRIDES = {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
SHAPES = {name: ShapeSpec(channels=16, stride=s) for name, s in STRIDES.items()}


def _cfg(**overrides):
    cfg = get_cfg()
    cfg.merge_from_file("configs/coco_panoptic/Base-Panoptic-FPN.yaml")
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 3
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 32
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 16
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 1
    cfg.merge_from_list([item for pair in overrides.items() for item in pair])
    return cfg


def _feature_maps(height: int, width: int, dtype=torch.float32) -> list[torch.Tensor]:
    """Feature maps of a padded (height, width) batch: ceil(size / stride) cells per level."""
    return [
        torch.zeros(1, 16, math.ceil(height / s), math.ceil(width / s), dtype=dtype)
        for s in STRIDES.values()
    ]


@pytest.mark.parametrize("size", [(800, 1216), (672, 736), (97, 133), (128, 160)])
@pytest.mark.parametrize("offset", [0.0, 0.5])
def test_anchor_centres_at_stride_times_index_on_every_level(size, offset):
    generator = build_anchor_generator(_cfg(**{"MODEL.ANCHOR_GENERATOR.OFFSET": offset}), SHAPES)
    maps = _feature_maps(*size)
    for level, (anchors, stride, feature) in enumerate(
        zip(generator(maps), STRIDES.values(), maps)
    ):
        h, w = feature.shape[-2:]
        assert anchors.dtype == torch.float32
        per_cell = anchors.view(h, w, 3, 4)
        cx = (per_cell[..., 0] + per_cell[..., 2]) / 2
        cy = (per_cell[..., 1] + per_cell[..., 3]) / 2
        expected_x = stride * (torch.arange(w, dtype=torch.float64) + offset)
        expected_y = stride * (torch.arange(h, dtype=torch.float64) + offset)
        torch.testing.assert_close(cx.double(), expected_x.view(1, w, 1).expand(h, w, 3))
        torch.testing.assert_close(cy.double(), expected_y.view(h, 1, 1).expand(h, w, 3))
        # the last p6 anchor of an 800 x 1216 batch: torchvision's image // grid stride put it
        # 36 px off (stride 61 instead of 64)
        if level == 4 and size == (800, 1216):
            assert float(cy.max()) == pytest.approx(64 * (12 + offset))


def test_cell_anchors_are_unrounded_areas_and_ratios():
    cell = DefaultAnchorGenerator.cell_anchors([32.0, 45.0], [0.5, 1.0, 2.0])
    widths, heights = cell[:, 2] - cell[:, 0], cell[:, 3] - cell[:, 1]
    expected_area = torch.tensor([32.0**2] * 3 + [45.0**2] * 3)  # sizes outer, ratios inner
    torch.testing.assert_close(widths * heights, expected_area)
    torch.testing.assert_close(heights / widths, torch.tensor([0.5, 1.0, 2.0] * 2))
    assert not torch.equal(cell, cell.round())  # 32 / sqrt(2) is kept as is


def test_anchors_and_decoded_proposals_are_float32_under_bf16_autocast():
    torch.manual_seed(0)
    rpn = build_rpn(_cfg(), SHAPES).eval()
    maps = _feature_maps(800, 1216)
    reference = rpn.anchor_generator(maps)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        anchors = rpn.anchor_generator([m.bfloat16() for m in maps])
    for a, r in zip(anchors, reference):
        assert a.dtype == torch.float32
        assert (a - r).abs().max() < 1e-3
    # decoding: the same bf16 deltas give the float32 boxes of their float32 values
    deltas = (torch.randn(1000, 4) * 0.5).bfloat16()
    boxes = reference[2][:1000]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        decoded = rpn.box_coder.decode_single(deltas.float(), boxes)
    expected = rpn.box_coder.decode_single(deltas.double(), boxes.double())
    assert decoded.dtype == torch.float32
    assert (decoded.double() - expected).abs().max() < 1e-3


def test_rpn_proposals_are_float32_under_bf16_autocast():
    torch.manual_seed(0)
    rpn = build_rpn(_cfg(), SHAPES).eval()
    from collections import OrderedDict

    from torchvision.models.detection.image_list import ImageList

    features = OrderedDict(
        (name, torch.randn(1, 16, math.ceil(256 / s), math.ceil(320 / s)))
        for name, s in STRIDES.items()
    )
    images = ImageList(torch.zeros(1, 3, 256, 320), [(250, 300)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        proposals, _ = rpn(images, features)
    assert proposals[0].dtype == torch.float32 and len(proposals[0]) > 0
    assert proposals[0][:, 2].max() <= 300 and proposals[0][:, 3].max() <= 250
    widths = proposals[0][:, 2] - proposals[0][:, 0]
    assert (widths > 0).all()


def test_roi_pooler_assigns_detectron2_levels_and_pools_aligned():
    torch.manual_seed(0)
    names = ["p2", "p3", "p4", "p5"]
    pooler = ROIPooler(7, featmap_names=names, strides=[4, 8, 16, 32], sampling_ratio=0)
    features = {n: torch.randn(2, 4, 64 // STRIDES[n], 96 // STRIDES[n]) for n in names}
    boxes = [
        torch.tensor([[0.0, 0.0, 10.0, 10.0], [3.0, 5.0, 250.0, 200.0]]),
        torch.tensor([[10.5, 3.25, 122.0, 111.0], [1.0, 1.0, 500.0, 700.0], [4.0, 4.0, 5.0, 5.0]]),
    ]
    out = pooler(features, boxes)
    assert out.shape == (5, 4, 7, 7)
    row = 0
    for image, image_boxes in enumerate(boxes):
        for box in image_boxes:
            side = math.sqrt(float((box[2] - box[0]) * (box[3] - box[1])))
            level = min(max(math.floor(4 + math.log2(side / 224 + 1e-8)), 2), 5)
            name = f"p{level}"
            roi = torch.cat([torch.tensor([float(image)]), box])[None]
            expected = roi_align(
                features[name], roi, (7, 7), 1 / STRIDES[name], sampling_ratio=0, aligned=True
            )
            torch.testing.assert_close(out[row : row + 1], expected)
            row += 1


def _gt_masks():
    masks = torch.zeros(2, 40, 50, dtype=torch.uint8)
    masks[0, 5:25, 10:30] = 1
    masks[1, 20:38, 2:47] = 1
    return masks


def test_mask_targets_are_aligned_roialign_binarised():
    heads = build_roi_heads(_cfg(), SHAPES)
    boxes = torch.tensor([[8.3, 3.7, 31.2, 26.9], [0.0, 18.5, 49.0, 39.0]])
    matched = torch.tensor([0, 1])
    targets = heads.mask_targets(_gt_masks(), boxes, matched, 28)
    assert set(targets.unique().tolist()) <= {0.0, 1.0}
    # oracle: sample the binary mask at the aligned bin centres (2 x 2 samples per bin), >= 0.5
    for i, (box, g) in enumerate(zip(boxes.tolist(), matched.tolist())):
        mask = _gt_masks()[g].double()
        x0, y0, x1, y1 = (v - 0.5 for v in box)  # aligned: shift by half a pixel
        grid = int(math.ceil((y1 - y0) / 28)), int(math.ceil((x1 - x0) / 28))
        bin_h, bin_w = (y1 - y0) / 28, (x1 - x0) / 28
        expected = torch.zeros(28, 28, dtype=torch.float64)
        for by in range(28):
            for bx in range(28):
                total = 0.0
                for iy in range(grid[0]):
                    for ix in range(grid[1]):
                        y = y0 + by * bin_h + (iy + 0.5) * bin_h / grid[0]
                        x = x0 + bx * bin_w + (ix + 0.5) * bin_w / grid[1]
                        total += _bilinear(mask, y, x)
                expected[by, bx] = total / (grid[0] * grid[1])
        torch.testing.assert_close(targets[i].double(), (expected >= 0.5).double())


def _bilinear(image: torch.Tensor, y: float, x: float) -> float:
    """RoIAlign's sampling: zero beyond one pixel outside, border-clamped inside."""
    h, w = image.shape
    if y < -1 or y > h or x < -1 or x > w:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = min(int(y), h - 1), min(int(x), w - 1)
    y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
    y = float(y0) if y0 >= h - 1 else y
    x = float(x0) if x0 >= w - 1 else x
    ly, lx = y - y0, x - x0
    return float(
        image[y0, x0] * (1 - ly) * (1 - lx)
        + image[y0, x1] * (1 - ly) * lx
        + image[y1, x0] * ly * (1 - lx)
        + image[y1, x1] * ly * lx
    )


def test_torchvision_pooling_option_gives_soft_unaligned_targets():
    heads = build_roi_heads(_cfg(**{"MODEL.ROI_MASK_HEAD.POOLER_TYPE": "ROIAlign"}), SHAPES)
    assert not heads.mask_roi_pool.aligned and heads.box_roi_pool.aligned
    targets = heads.mask_targets(
        _gt_masks(), torch.tensor([[8.3, 3.7, 31.2, 26.9]]), torch.tensor([0]), 28
    )
    assert ((targets > 0) & (targets < 1)).any()
    with pytest.raises(ValueError, match="POOLER_TYPE"):
        build_roi_heads(_cfg(**{"MODEL.ROI_BOX_HEAD.POOLER_TYPE": "RoIPool"}), SHAPES)


def test_box_losses_are_l1_over_sampled_rois():
    heads = build_roi_heads(_cfg(), SHAPES)
    logits = torch.randn(6, 4)
    deltas = torch.randn(6, 16)
    labels = [torch.tensor([0, 2, 1]), torch.tensor([3, 0, 0])]
    targets = [torch.randn(3, 4), torch.randn(3, 4)]
    losses = heads.box_losses(logits, deltas, labels, targets)
    flat_labels, flat_targets = torch.cat(labels), torch.cat(targets)
    expected = sum(
        (deltas[i].view(4, 4)[c] - flat_targets[i]).abs().sum()
        for i, c in enumerate(flat_labels.tolist())
        if c > 0
    )
    torch.testing.assert_close(losses["loss_box_reg"], expected / 6)
    torch.testing.assert_close(
        losses["loss_classifier"], torch.nn.functional.cross_entropy(logits, flat_labels)
    )


def test_initialisation_follows_detectron2():
    torch.manual_seed(0)
    cfg = _cfg(**{"MODEL.ROI_HEADS.NUM_CLASSES": 80, "MODEL.ROI_BOX_HEAD.FC_DIM": 1024})
    heads = build_roi_heads(cfg, {n: ShapeSpec(channels=256, stride=s) for n, s in STRIDES.items()})
    predictor = heads.box_predictor
    assert predictor.cls_score.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert predictor.bbox_pred.weight.std().item() == pytest.approx(0.001, rel=0.05)
    mask_logits = heads.mask_predictor.mask_fcn_logits
    assert mask_logits.weight.std().item() == pytest.approx(0.001, rel=0.1)
    fc1 = heads.box_head.layers[1]
    bound = math.sqrt(3.0 / fc1.in_features)  # kaiming_uniform_(a=1): U(-sqrt(3/fan_in), ...)
    assert fc1.weight.abs().max() <= bound and fc1.weight.abs().max() > 0.99 * bound
    for layer in (predictor.cls_score, predictor.bbox_pred, mask_logits, fc1):
        assert not layer.bias.any()


def test_rpn_proposals_equal_detectron2s_selection():
    """Oracle written from detectron2's find_top_rpn_proposals: decode every anchor, per level
    the top-k logits, then per image clip, drop empty boxes, NMS per level, keep the best."""
    from torchvision.ops import batched_nms as nms

    torch.manual_seed(0)
    rpn = build_rpn(
        _cfg(**{"MODEL.RPN.PRE_NMS_TOPK_TEST": 50, "MODEL.RPN.POST_NMS_TOPK_TEST": 40}), SHAPES
    ).eval()
    maps = _feature_maps(97, 133)
    anchors = rpn.anchor_generator(maps)
    deltas = [torch.randn(2, len(a), 4) for a in anchors]
    logits = [torch.randn(2, len(a)) for a in anchors]
    sizes = [(97, 133), (80, 120)]
    ours = rpn.select_proposals(anchors, deltas, logits, sizes)
    for image, size in enumerate(sizes):
        boxes, scores, levels = [], [], []
        for level, (a, d, s) in enumerate(zip(anchors, deltas, logits)):
            decoded = rpn.box_coder.decode_single(d[image], a)
            top = s[image].topk(min(50, len(a))).indices
            boxes.append(decoded[top])
            scores.append(s[image][top])
            levels.append(torch.full((len(top),), level))
        boxes, scores, levels = torch.cat(boxes), torch.cat(scores), torch.cat(levels)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, size[1])
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, size[0])
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        expected = boxes[nms(boxes, scores, levels, 0.7)[:40]]
        torch.testing.assert_close(ours[image], expected)


@pytest.mark.parametrize("multiple", [0, 4, 32])
def test_padding_the_mask_heads_rois_leaves_logits_and_gradients_unchanged(multiple):
    """MODEL.ROI_MASK_HEAD.PAD_ROIS_TO_MULTIPLE only changes the batch cuDNN sees: the logits of
    the real RoIs and every mask-head gradient stay those of the unpadded head."""
    torch.manual_seed(0)
    plain = build_roi_heads(_cfg(**{"MODEL.ROI_MASK_HEAD.PAD_ROIS_TO_MULTIPLE": 1}), SHAPES)
    padded = build_roi_heads(_cfg(**{"MODEL.ROI_MASK_HEAD.PAD_ROIS_TO_MULTIPLE": multiple}), SHAPES)
    padded.load_state_dict(plain.state_dict())
    plain, padded = plain.double(), padded.double()  # float64: summation order does not show
    features = {n: torch.randn(2, 16, 64 // s, 96 // s).double() for n, s in STRIDES.items()}
    boxes = [torch.tensor([[0.0, 0.0, 30.0, 20.0], [5.0, 3.0, 90.0, 60.0]]), torch.rand(3, 2)]
    boxes[1] = torch.cat([boxes[1] * 40, boxes[1] * 40 + 20], dim=1)
    results = []
    for heads in (plain, padded):
        logits = heads._mask_logits(features, boxes, [(64, 96)] * 2)
        (logits * torch.linspace(-1, 1, logits.numel()).view_as(logits)).sum().backward()
        layers = (heads.mask_head, heads.mask_predictor)
        grads = [p.grad for layer in layers for p in layer.parameters()]
        results.append((logits.detach(), grads))
    assert results[0][0].shape == results[1][0].shape == (5, 4, 28, 28)
    torch.testing.assert_close(results[1][0], results[0][0])
    for got, expected in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(got, expected)


def test_a_negative_mask_roi_multiple_is_refused():
    with pytest.raises(ValueError, match="PAD_ROIS_TO_MULTIPLE must be >= 0, got -1"):
        build_roi_heads(_cfg(**{"MODEL.ROI_MASK_HEAD.PAD_ROIS_TO_MULTIPLE": -1}), SHAPES)


def test_the_mask_head_pads_its_rois_on_cuda_only_by_default(monkeypatch):
    """PAD_ROIS_TO_MULTIPLE 0: the mask head sees 32 RoIs for 5 on a CUDA device, 5 on the CPU."""
    heads = build_roi_heads(_cfg(), SHAPES)
    seen = []
    monkeypatch.setattr(heads.mask_roi_pool, "forward", lambda *a: torch.zeros(5, 16, 14, 14))
    heads.mask_head.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    assert heads._mask_logits({}, [], []).shape[0] == 5
    if torch.cuda.is_available():
        heads.cuda()
        monkeypatch.setattr(
            heads.mask_roi_pool, "forward", lambda *a: torch.zeros(5, 16, 14, 14).cuda()
        )
        assert heads._mask_logits({}, [], []).shape[0] == 5
    assert seen == ([5, 32] if torch.cuda.is_available() else [5])


def test_rpn_refuses_non_finite_proposals_while_training_and_drops_them_at_inference():
    torch.manual_seed(0)
    rpn = build_rpn(_cfg(), SHAPES)
    maps = _feature_maps(97, 133)
    anchors = rpn.anchor_generator(maps)
    deltas = [torch.randn(2, len(a), 4) for a in anchors]
    logits = [torch.randn(2, len(a)) for a in anchors]
    logits[0][1, :5] = float("nan")  # the second image's 5 first p2 anchors
    sizes = [(97, 133), (80, 120)]
    with pytest.raises(FloatingPointError, match="training diverged"):
        rpn.train().select_proposals(anchors, deltas, logits, sizes)
    proposals = rpn.eval().select_proposals(anchors, deltas, logits, sizes)
    clean = [x.clone() for x in logits]
    clean[0][1, :5] = -1e4  # ranked last: the NaN ones are the only ones dropped
    expected = rpn.select_proposals(anchors, deltas, clean, sizes)
    torch.testing.assert_close(proposals[0], expected[0])
    assert torch.isfinite(proposals[1]).all()
