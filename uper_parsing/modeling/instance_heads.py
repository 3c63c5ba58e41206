"""The instance branch of Panoptic FPN, built from torchvision's detection components.

``build_rpn`` makes torchvision's ``RegionProposalNetwork`` (anchor generator + one shared conv
head) and ``build_roi_heads`` its ``RoIHeads`` (multi-scale RoIAlign, an MLP box head, box
predictor, the 4-conv mask head and mask predictor), every setting from ``MODEL.ANCHOR_GENERATOR``,
``MODEL.RPN``, ``MODEL.ROI_HEADS``, ``MODEL.ROI_BOX_HEAD`` and ``MODEL.ROI_MASK_HEAD``.

torchvision counts the background as class 0, so its heads predict ``NUM_CLASSES + 1`` classes;
the meta-architecture shifts thing ids by one on the way in and out.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import MultiScaleRoIAlign

from ..layers import ShapeSpec

__all__ = ["FastRCNNMLPHead", "build_anchor_generator", "build_roi_heads", "build_rpn"]


def _same_channels(input_shape: dict[str, ShapeSpec], names: Sequence[str], key: str) -> int:
    """The one channel count of the features ``names`` (a clear error when one is missing)."""
    missing = [n for n in names if n not in input_shape]
    if missing:
        raise ValueError(f"{key} names {missing}, the backbone gives {sorted(input_shape)}")
    channels = {input_shape[n].channels for n in names}
    if len(channels) != 1:
        raise ValueError(
            f"{key} features {list(names)} must have one channel count, got {channels}"
        )
    return channels.pop()


def build_anchor_generator(cfg, num_levels: int) -> AnchorGenerator:
    """Anchors of ``MODEL.ANCHOR_GENERATOR`` for ``num_levels`` pyramid levels."""
    sizes = [tuple(float(s) for s in level) for level in cfg.MODEL.ANCHOR_GENERATOR.SIZES]
    ratios = [tuple(float(r) for r in level) for level in cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS]
    if len(ratios) == 1:
        ratios = ratios * num_levels
    if len(sizes) != num_levels or len(ratios) != num_levels:
        raise ValueError(
            f"MODEL.ANCHOR_GENERATOR has {len(sizes)} SIZES and {len(ratios)} ASPECT_RATIOS lists "
            f"but MODEL.RPN.IN_FEATURES has {num_levels} levels; give one list per level "
            "(ASPECT_RATIOS may be a single list for every level)"
        )
    return AnchorGenerator(sizes=tuple(sizes), aspect_ratios=tuple(ratios))


def build_rpn(cfg, input_shape: dict[str, ShapeSpec]) -> RegionProposalNetwork:
    """torchvision's RPN over ``MODEL.RPN.IN_FEATURES`` (in that order).

    Its ``forward(images: ImageList, features: OrderedDict[name, Tensor], targets=None)`` returns
    (proposals list[Tensor (P_i, 4)], losses ``loss_objectness`` / ``loss_rpn_box_reg``).
    """
    rpn = cfg.MODEL.RPN
    channels = _same_channels(input_shape, rpn.IN_FEATURES, "MODEL.RPN.IN_FEATURES")
    anchors = build_anchor_generator(cfg, len(rpn.IN_FEATURES))
    head = RPNHead(channels, anchors.num_anchors_per_location()[0])
    if len(set(anchors.num_anchors_per_location())) != 1:
        raise ValueError("MODEL.ANCHOR_GENERATOR must give every level the same number of anchors")
    low, high = rpn.IOU_THRESHOLDS
    return RegionProposalNetwork(
        anchors,
        head,
        fg_iou_thresh=high,
        bg_iou_thresh=low,
        batch_size_per_image=rpn.BATCH_SIZE_PER_IMAGE,
        positive_fraction=rpn.POSITIVE_FRACTION,
        pre_nms_top_n={"training": rpn.PRE_NMS_TOPK_TRAIN, "testing": rpn.PRE_NMS_TOPK_TEST},
        post_nms_top_n={"training": rpn.POST_NMS_TOPK_TRAIN, "testing": rpn.POST_NMS_TOPK_TEST},
        nms_thresh=rpn.NMS_THRESH,
        score_thresh=rpn.SCORE_THRESH,
    )


class FastRCNNMLPHead(nn.Module):
    """Box head: flatten the pooled RoI features, then ``num_fc`` x (Linear + ReLU).

    ``forward(x: Tensor (R, C, P, P)) -> Tensor (R, fc_dim)``. With two layers this is
    torchvision's ``TwoMLPHead``; the layer count is a config value here, as in detectron2.
    """

    def __init__(self, in_channels: int, pooler_resolution: int, *, num_fc: int, fc_dim: int):
        super().__init__()
        if num_fc < 1:
            raise ValueError(f"MODEL.ROI_BOX_HEAD.NUM_FC must be >= 1, got {num_fc}")
        layers: list[nn.Module] = [nn.Flatten(start_dim=1)]
        in_dim = in_channels * pooler_resolution**2
        for _ in range(num_fc):
            layers += [nn.Linear(in_dim, fc_dim), nn.ReLU(inplace=True)]
            in_dim = fc_dim
        self.layers = nn.Sequential(*layers)
        self.output_dim = fc_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def build_roi_heads(cfg, input_shape: dict[str, ShapeSpec]) -> RoIHeads:
    """torchvision's ``RoIHeads`` with box and mask branches over ``MODEL.ROI_HEADS.IN_FEATURES``.

    Its ``forward(features, proposals, image_sizes, targets=None)`` returns (detections per image
    with ``boxes``, ``labels`` (1..K), ``scores``, ``masks`` (N, 1, 28, 28) probabilities; losses
    ``loss_classifier``, ``loss_box_reg``, ``loss_mask``).
    """
    heads = cfg.MODEL.ROI_HEADS
    box, mask = cfg.MODEL.ROI_BOX_HEAD, cfg.MODEL.ROI_MASK_HEAD
    names = list(heads.IN_FEATURES)
    channels = _same_channels(input_shape, names, "MODEL.ROI_HEADS.IN_FEATURES")
    num_classes = heads.NUM_CLASSES + 1  # + torchvision's background
    box_head = FastRCNNMLPHead(
        channels, box.POOLER_RESOLUTION, num_fc=box.NUM_FC, fc_dim=box.FC_DIM
    )
    if mask.NUM_CONV < 1:
        raise ValueError(f"MODEL.ROI_MASK_HEAD.NUM_CONV must be >= 1, got {mask.NUM_CONV}")
    mask_layers = [mask.CONV_DIM] * mask.NUM_CONV
    return RoIHeads(
        box_roi_pool=MultiScaleRoIAlign(names, box.POOLER_RESOLUTION, box.POOLER_SAMPLING_RATIO),
        box_head=box_head,
        box_predictor=FastRCNNPredictor(box_head.output_dim, num_classes),
        fg_iou_thresh=heads.IOU_THRESHOLD,
        bg_iou_thresh=heads.IOU_THRESHOLD,
        batch_size_per_image=heads.BATCH_SIZE_PER_IMAGE,
        positive_fraction=heads.POSITIVE_FRACTION,
        bbox_reg_weights=tuple(box.BBOX_REG_WEIGHTS),
        score_thresh=heads.SCORE_THRESH_TEST,
        nms_thresh=heads.NMS_THRESH_TEST,
        detections_per_img=heads.DETECTIONS_PER_IMAGE,
        mask_roi_pool=MultiScaleRoIAlign(names, mask.POOLER_RESOLUTION, mask.POOLER_SAMPLING_RATIO),
        mask_head=MaskRCNNHeads(channels, mask_layers, dilation=1),
        mask_predictor=MaskRCNNPredictor(mask.CONV_DIM, mask.CONV_DIM, num_classes),
    )
