"""The instance branch of Panoptic FPN: torchvision's detection modules, detectron2's numerics.

``build_rpn`` makes a ``RegionProposalNetwork`` and ``build_roi_heads`` a ``RoIHeads`` (box and
mask branches). Both are subclasses of torchvision's classes and keep its modules (``RPNHead``,
``Matcher``, ``BalancedPositiveNegativeSampler``, ``BoxCoder``, ``MaskRCNNHeads``,
``MaskRCNNPredictor``, ``FastRCNNPredictor``), but compute what detectron2's Base-RCNN-FPN computes:

- anchors at the backbone's feature strides (``ShapeSpec``), unrounded, with an offset, in float32;
- box encoding and decoding in float32 whatever the autocast dtype;
- proposals ranked and suppressed on objectness logits, empty boxes dropped;
- RoIAlign with ``aligned=True`` (``ROIAlignV2``) and detectron2's level assignment;
- L1 box losses (a smooth-L1 beta per branch) with detectron2's normalisers;
- mask targets cut from the ground truth with aligned RoIAlign and binarised at 0.5;
- detectron2's initialisation of the box head, box predictor and mask predictor.

torchvision counts the background as class 0, so its heads predict ``NUM_CLASSES + 1`` classes;
the meta-architecture shifts thing ids by one on the way in and out.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.ops import batched_nms, clip_boxes_to_image, roi_align

from ..layers import ShapeSpec, batched_nms_top

__all__ = [
    "DefaultAnchorGenerator",
    "FastRCNNMLPHead",
    "MaskRCNNRoIHeads",
    "ROIPooler",
    "StandardRPN",
    "box_regression_loss",
    "build_anchor_generator",
    "build_roi_heads",
    "build_rpn",
]

_POOLER_TYPES = {"ROIAlignV2": True, "ROIAlign": False}  # name -> RoIAlign ``aligned``


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


def box_regression_loss(pred: torch.Tensor, target: torch.Tensor, beta: float) -> torch.Tensor:
    """Summed smooth-L1 loss with ``beta`` (L1 for ``beta`` < 1e-5, as detectron2)."""
    if beta < 1e-5:
        return (pred - target).abs().sum()
    return F.smooth_l1_loss(pred, target, beta=beta, reduction="sum")


def _pooler_aligned(name: str, key: str) -> bool:
    if name not in _POOLER_TYPES:
        raise ValueError(f"{key} = {name!r} is not one of {sorted(_POOLER_TYPES)}")
    return _POOLER_TYPES[name]


class DefaultAnchorGenerator(nn.Module):
    """detectron2's anchors: per level, ``len(sizes) x len(aspect_ratios)`` cell anchors of area
    ``size**2`` and height / width ``aspect_ratio`` (sizes outer, ratios inner), centred on the
    grid points ``stride * (i + offset)``; never rounded, always float32.

    ``forward(features: list[Tensor (N, C, H_l, W_l)]) -> list[Tensor (H_l * W_l * A, 4)]`` XYXY
    anchors per level, location-major (all anchors of grid cell 0, then cell 1, ...).
    """

    def __init__(
        self,
        *,
        sizes: Sequence[Sequence[float]],
        aspect_ratios: Sequence[Sequence[float]],
        strides: Sequence[int],
        offset: float = 0.0,
    ) -> None:
        super().__init__()
        if not len(sizes) == len(aspect_ratios) == len(strides):
            raise ValueError(
                f"{len(sizes)} anchor size lists, {len(aspect_ratios)} aspect-ratio lists and "
                f"{len(strides)} strides: give one of each per level"
            )
        if not 0.0 <= offset < 1.0:
            raise ValueError(f"MODEL.ANCHOR_GENERATOR.OFFSET must be in [0, 1), got {offset}")
        self.strides = [int(s) for s in strides]
        self.offset = float(offset)
        for level, (level_sizes, ratios) in enumerate(zip(sizes, aspect_ratios)):
            cell = self.cell_anchors(level_sizes, ratios)
            self.register_buffer(f"cell_anchors_{level}", cell, persistent=False)

    @staticmethod
    def cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> torch.Tensor:
        """Tensor (len(sizes) * len(aspect_ratios), 4) XYXY anchors centred on (0, 0)."""
        anchors = []
        for size in sizes:
            for ratio in aspect_ratios:
                width = math.sqrt(size * size / ratio)
                height = ratio * width
                anchors.append([-width / 2, -height / 2, width / 2, height / 2])
        return torch.tensor(anchors, dtype=torch.float32)

    def num_anchors_per_location(self) -> list[int]:
        return [len(getattr(self, f"cell_anchors_{i}")) for i in range(len(self.strides))]

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != len(self.strides):
            raise ValueError(f"{len(features)} feature maps for {len(self.strides)} anchor levels")
        anchors = []
        for level, (feature, stride) in enumerate(zip(features, self.strides)):
            cell = getattr(self, f"cell_anchors_{level}").to(torch.float32)
            height, width = feature.shape[-2:]
            ys = (
                torch.arange(height, dtype=torch.float32, device=cell.device) + self.offset
            ) * stride
            xs = (
                torch.arange(width, dtype=torch.float32, device=cell.device) + self.offset
            ) * stride
            grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
            grid_x, grid_y = grid_x.reshape(-1), grid_y.reshape(-1)
            shifts = torch.stack((grid_x, grid_y, grid_x, grid_y), dim=1)
            anchors.append((shifts[:, None, :] + cell[None, :, :]).reshape(-1, 4))
        return anchors


def build_anchor_generator(cfg, input_shape: dict[str, ShapeSpec]) -> DefaultAnchorGenerator:
    """Anchors of ``MODEL.ANCHOR_GENERATOR`` on ``MODEL.RPN.IN_FEATURES`` at their strides."""
    names = list(cfg.MODEL.RPN.IN_FEATURES)
    sizes = [[float(s) for s in level] for level in cfg.MODEL.ANCHOR_GENERATOR.SIZES]
    ratios = [[float(r) for r in level] for level in cfg.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS]
    if len(ratios) == 1:
        ratios = ratios * len(names)
    if len(sizes) != len(names) or len(ratios) != len(names):
        raise ValueError(
            f"MODEL.ANCHOR_GENERATOR has {len(sizes)} SIZES and {len(ratios)} ASPECT_RATIOS lists "
            f"but MODEL.RPN.IN_FEATURES has {len(names)} levels; give one list per level "
            "(ASPECT_RATIOS may be a single list for every level)"
        )
    return DefaultAnchorGenerator(
        sizes=sizes,
        aspect_ratios=ratios,
        strides=[input_shape[n].stride for n in names],
        offset=cfg.MODEL.ANCHOR_GENERATOR.OFFSET,
    )


def _clip_boxes(boxes: torch.Tensor, image_sizes: Sequence[tuple[int, int]]) -> torch.Tensor:
    """(N, K, 4) XYXY boxes clipped to each image's (height, width), as torchvision's
    ``clip_boxes_to_image`` clips one image's."""
    limits = torch.tensor(
        [[w, h, w, h] for h, w in image_sizes], dtype=boxes.dtype, device=boxes.device
    )
    return torch.minimum(boxes.clamp(min=0), limits[:, None, :])


def _flatten_rpn_outputs(
    objectness: list[torch.Tensor], deltas: list[torch.Tensor]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per level (N, A, H, W) logits and (N, A*4, H, W) deltas -> float32 (N, H*W*A) and
    (N, H*W*A, 4), in the anchors' location-major order."""
    logits, flat_deltas = [], []
    for obj, delta in zip(objectness, deltas):
        n, a, h, w = obj.shape
        logits.append(obj.permute(0, 2, 3, 1).reshape(n, -1).float())
        delta = delta.view(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4)
        flat_deltas.append(delta.float())
    return logits, flat_deltas


class StandardRPN(RegionProposalNetwork):
    """torchvision's ``RegionProposalNetwork`` (``head``, matcher, sampler, box coder) with
    detectron2's ``RPN`` numerics: float32 anchors and decoding, top-k per level on logits,
    per-level NMS, empty boxes dropped, L1 box loss normalised by ``batch_size_per_image x N``.

    ``forward(images: ImageList, features: OrderedDict[name, Tensor], targets=None)`` returns
    (proposals list[Tensor (P_i, 4)] float32 XYXY sorted by objectness, losses
    ``loss_objectness`` / ``loss_rpn_box_reg``).
    """

    def __init__(
        self,
        anchor_generator: DefaultAnchorGenerator,
        head: nn.Module,
        *,
        smooth_l1_beta: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(anchor_generator, head, **kwargs)
        self.smooth_l1_beta = smooth_l1_beta
        self.min_size = 0.0

    def forward(
        self,
        images: ImageList,
        features: OrderedDict[str, torch.Tensor],
        targets: list[dict[str, torch.Tensor]] | None = None,
    ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        maps = list(features.values())
        objectness, deltas = self.head(maps)
        anchors = self.anchor_generator(maps)
        logits, deltas = _flatten_rpn_outputs(objectness, deltas)
        boxes = self.select_proposals(
            anchors, [d.detach() for d in deltas], [x.detach() for x in logits], images.image_sizes
        )
        losses = {}
        if self.training:
            if targets is None:
                raise ValueError("the RPN needs targets while training")
            losses = self.rpn_losses(torch.cat(anchors), logits, deltas, targets)
        return boxes, losses

    def select_proposals(
        self,
        anchors: list[torch.Tensor],
        deltas: list[torch.Tensor],
        logits: list[torch.Tensor],
        image_sizes: list[tuple[int, int]],
    ) -> list[torch.Tensor]:
        """Per level the ``pre_nms_top_n`` highest logits (their anchors decoded, in float32),
        then per image: clip, drop non-finite and empty boxes, NMS within each level, keep the
        ``post_nms_top_n`` best. Decoding only the selected anchors gives the boxes detectron2
        gets by decoding all of them first (the decoding is element-wise).

        Args: anchors per level (R_l, 4), deltas per level (N, R_l, 4), logits per level (N, R_l).
        Returns: per image Tensor (P_i, 4), highest objectness first.
        """
        top_boxes, top_scores, levels = [], [], []
        batch = torch.arange(len(image_sizes), device=logits[0].device)[:, None]
        for level, (level_anchors, level_deltas, scores) in enumerate(zip(anchors, deltas, logits)):
            k = min(self.pre_nms_top_n(), scores.shape[1])
            scores, index = scores.topk(k, dim=1)
            boxes = self.box_coder.decode_single(
                level_deltas[batch, index].reshape(-1, 4), level_anchors[index].reshape(-1, 4)
            )
            top_boxes.append(boxes.view(len(image_sizes), k, 4))
            top_scores.append(scores)
            levels.append(torch.full((k,), level, dtype=torch.int64, device=scores.device))
        all_boxes, all_scores, all_levels = (
            torch.cat(top_boxes, 1),
            torch.cat(top_scores, 1),
            torch.cat(levels),
        )
        # every image at once, then one host read per image (the kept indices) besides NMS's
        finite = torch.isfinite(all_boxes).all(dim=2) & torch.isfinite(all_scores)
        if self.training and not bool(finite.all()):
            raise FloatingPointError("RPN boxes or logits are Inf/NaN: training diverged")
        all_boxes = _clip_boxes(all_boxes, image_sizes)
        widths = all_boxes[..., 2] - all_boxes[..., 0]
        heights = all_boxes[..., 3] - all_boxes[..., 1]
        keep = finite & (widths > self.min_size) & (heights > self.min_size)
        if self.score_thresh > 0:
            keep &= torch.sigmoid(all_scores) >= self.score_thresh
        results = []
        for boxes, scores, image_keep in zip(all_boxes, all_scores, keep):
            index = torch.nonzero(image_keep).squeeze(1)
            boxes, scores = boxes[index], scores[index]
            kept = batched_nms(boxes, scores, all_levels[index], self.nms_thresh)
            results.append(boxes[kept[: self.post_nms_top_n()]])
        return results

    def rpn_losses(
        self,
        anchors: torch.Tensor,
        logits: list[torch.Tensor],
        deltas: list[torch.Tensor],
        targets: list[dict[str, torch.Tensor]],
    ) -> dict[str, torch.Tensor]:
        """Objectness BCE and box L1 over ``batch_size_per_image`` sampled anchors per image,
        both divided by ``batch_size_per_image x N`` (detectron2).

        Args: anchors (R, 4) of every level; logits per level (N, R_l); deltas (N, R_l, 4).
        """
        num_images = len(targets)
        targets = [{"boxes": t["boxes"].to(torch.float32)} for t in targets]
        labels, matched_boxes = self.assign_targets_to_anchors([anchors] * num_images, targets)
        positive, negative = self.fg_bg_sampler(labels)
        positive, negative = torch.stack(positive).bool(), torch.stack(negative).bool()
        labels = torch.stack(labels)
        logits, deltas = torch.cat(logits, 1), torch.cat(deltas, 1)
        sampled = positive | negative
        objectness = F.binary_cross_entropy_with_logits(
            logits[sampled], labels[sampled], reduction="sum"
        )
        # encode only the positive anchors (element-wise, the same as encoding all of them)
        target_deltas = self.box_coder.encode_single(
            torch.stack(matched_boxes)[positive], anchors[torch.nonzero(positive)[:, 1]]
        )
        box_loss = box_regression_loss(deltas[positive], target_deltas, self.smooth_l1_beta)
        normalizer = self.fg_bg_sampler.batch_size_per_image * num_images
        return {
            "loss_objectness": objectness / normalizer,
            "loss_rpn_box_reg": box_loss / normalizer,
        }


def build_rpn(cfg, input_shape: dict[str, ShapeSpec]) -> StandardRPN:
    """The RPN over ``MODEL.RPN.IN_FEATURES`` (in that order), anchors at their strides."""
    rpn = cfg.MODEL.RPN
    channels = _same_channels(input_shape, rpn.IN_FEATURES, "MODEL.RPN.IN_FEATURES")
    anchors = build_anchor_generator(cfg, input_shape)
    if len(set(anchors.num_anchors_per_location())) != 1:
        raise ValueError("MODEL.ANCHOR_GENERATOR must give every level the same number of anchors")
    low, high = rpn.IOU_THRESHOLDS
    return StandardRPN(
        anchors,
        RPNHead(channels, anchors.num_anchors_per_location()[0]),
        smooth_l1_beta=rpn.SMOOTH_L1_BETA,
        fg_iou_thresh=high,
        bg_iou_thresh=low,
        batch_size_per_image=rpn.BATCH_SIZE_PER_IMAGE,
        positive_fraction=rpn.POSITIVE_FRACTION,
        pre_nms_top_n={"training": rpn.PRE_NMS_TOPK_TRAIN, "testing": rpn.PRE_NMS_TOPK_TEST},
        post_nms_top_n={"training": rpn.POST_NMS_TOPK_TRAIN, "testing": rpn.POST_NMS_TOPK_TEST},
        nms_thresh=rpn.NMS_THRESH,
        score_thresh=rpn.SCORE_THRESH,
    )


class ROIPooler(nn.Module):
    """RoIAlign over several pyramid levels, each box pooled from the level detectron2 assigns:
    ``floor(canonical_level + log2(sqrt(area) / canonical_box_size + 1e-8))`` clamped to the
    levels given.

    ``forward(features: {name: Tensor (N, C, H_l, W_l)}, boxes: list[Tensor (R_i, 4)],
    image_shapes=None) -> Tensor (sum R_i, C, P, P)`` (the signature of torchvision's
    ``MultiScaleRoIAlign``, which ``RoIHeads`` calls).
    """

    def __init__(
        self,
        output_size: int,
        *,
        featmap_names: Sequence[str],
        strides: Sequence[int],
        sampling_ratio: int = 0,
        aligned: bool = True,
        canonical_box_size: int = 224,
        canonical_level: int = 4,
    ) -> None:
        super().__init__()
        levels = [math.log2(s) for s in strides]
        if any(b - a != 1 for a, b in zip(levels, levels[1:])) or any(
            lv != int(lv) for lv in levels
        ):
            raise ValueError(
                f"RoI pooling needs power-of-two strides doubling per level: {strides}"
            )
        self.featmap_names = list(featmap_names)
        self.scales = [1.0 / s for s in strides]
        self.min_level, self.max_level = int(levels[0]), int(levels[-1])
        self.output_size = (output_size, output_size)
        self.sampling_ratio = sampling_ratio
        self.aligned = aligned
        self.canonical_box_size = canonical_box_size
        self.canonical_level = canonical_level

    def assign_levels(self, boxes: torch.Tensor) -> torch.Tensor:
        """boxes (R, 4) -> (R,) int64 index into ``featmap_names``."""
        sizes = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).sqrt()
        levels = torch.floor(
            self.canonical_level + torch.log2(sizes / self.canonical_box_size + 1e-8)
        )
        return levels.clamp(self.min_level, self.max_level).to(torch.int64) - self.min_level

    def forward(
        self,
        features: dict[str, torch.Tensor],
        boxes: list[torch.Tensor],
        image_shapes: list[tuple[int, int]] | None = None,
    ) -> torch.Tensor:
        maps = [features[name] for name in self.featmap_names]
        rois = torch.cat(
            [
                torch.cat([torch.full_like(b[:, :1], i), b], dim=1)
                for i, b in enumerate(b.to(torch.float32) for b in boxes)
            ]
        )
        if len(maps) == 1:
            return self._align(maps[0], rois, self.scales[0])
        levels = self.assign_levels(rois[:, 1:])
        # the boxes of each level, in box order: one host read for all levels
        order = torch.argsort(levels, stable=True)
        counts = torch.bincount(levels, minlength=len(maps)).tolist()
        channels = maps[0].shape[1]
        out = maps[0].new_zeros((len(rois), channels, *self.output_size))
        start = 0
        for feature, scale, count in zip(maps, self.scales, counts):
            if count:
                index = order[start : start + count]
                out.index_put_((index,), self._align(feature, rois[index], scale).to(out.dtype))
            start += count
        return out

    def _align(self, feature: torch.Tensor, rois: torch.Tensor, scale: float) -> torch.Tensor:
        # float32 features and boxes, as torchvision's autocast rule for roi_align does anyway:
        # box coordinates in bfloat16 would be off by pixels
        return roi_align(
            feature.float(),
            rois,
            self.output_size,
            spatial_scale=scale,
            sampling_ratio=self.sampling_ratio,
            aligned=self.aligned,
        )


class FastRCNNMLPHead(nn.Module):
    """Box head: flatten the pooled RoI features, then ``num_fc`` x (Linear + ReLU).

    ``forward(x: Tensor (R, C, P, P)) -> Tensor (R, fc_dim)``. With two layers this is
    torchvision's ``TwoMLPHead``; the layer count is a config value here, as in detectron2, and
    the layers start as detectron2's (``c2_xavier_fill``: Kaiming uniform, a = 1, zero bias).
    """

    def __init__(self, in_channels: int, pooler_resolution: int, *, num_fc: int, fc_dim: int):
        super().__init__()
        if num_fc < 1:
            raise ValueError(f"MODEL.ROI_BOX_HEAD.NUM_FC must be >= 1, got {num_fc}")
        layers: list[nn.Module] = [nn.Flatten(start_dim=1)]
        in_dim = in_channels * pooler_resolution**2
        for _ in range(num_fc):
            fc = nn.Linear(in_dim, fc_dim)
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.zeros_(fc.bias)
            layers += [fc, nn.ReLU(inplace=True)]
            in_dim = fc_dim
        self.layers = nn.Sequential(*layers)
        self.output_dim = fc_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _box_predictor(in_dim: int, num_classes: int) -> FastRCNNPredictor:
    """torchvision's predictor (background row 0) with detectron2's init: class scores
    N(0, 0.01), box deltas N(0, 0.001), zero biases."""
    predictor = FastRCNNPredictor(in_dim, num_classes)
    nn.init.normal_(predictor.cls_score.weight, std=0.01)
    nn.init.normal_(predictor.bbox_pred.weight, std=0.001)
    for layer in (predictor.cls_score, predictor.bbox_pred):
        nn.init.zeros_(layer.bias)
    return predictor


def _mask_predictor(in_channels: int, num_classes: int) -> MaskRCNNPredictor:
    """torchvision's predictor (2x deconv + 1x1) with detectron2's init of the 1x1: N(0, 0.001)."""
    predictor = MaskRCNNPredictor(in_channels, in_channels, num_classes)
    nn.init.normal_(predictor.mask_fcn_logits.weight, std=0.001)
    nn.init.zeros_(predictor.mask_fcn_logits.bias)
    return predictor


# MODEL.ROI_MASK_HEAD.PAD_ROIS_TO_MULTIPLE 0 on a CUDA device: at most 8 RoI counts at
# batch 2 (up to 256 foreground RoIs), 32 at batch 8, 4 at inference (up to 100 per image)
CUDA_MASK_ROI_MULTIPLE = 32


class MaskRCNNRoIHeads(RoIHeads):
    """torchvision's ``RoIHeads`` (proposal matching, sampling, box coder, box / mask heads) with
    detectron2's ``StandardROIHeads`` numerics: float32 box coding, L1 box loss
    (``smooth_l1_beta``), mask targets by aligned RoIAlign binarised at 0.5
    (``aligned_mask_targets``), and detectron2's ``fast_rcnn_inference`` (no small-box filter,
    non-finite predictions dropped).

    ``forward(features, proposals, image_sizes, targets=None)`` returns (detections per image:
    ``boxes`` (D, 4), ``labels`` (D,) in 1..K, ``scores`` (D,), ``masks`` (D, 1, M, M)
    probabilities; losses ``loss_classifier``, ``loss_box_reg``, ``loss_mask``).
    """

    def __init__(
        self,
        *args,
        smooth_l1_beta: float = 0.0,
        aligned_mask_targets: bool = True,
        mask_roi_multiple: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if mask_roi_multiple < 0:
            raise ValueError(
                f"MODEL.ROI_MASK_HEAD.PAD_ROIS_TO_MULTIPLE must be >= 0, got {mask_roi_multiple}"
            )
        self.smooth_l1_beta = smooth_l1_beta
        self.aligned_mask_targets = aligned_mask_targets
        self.mask_roi_multiple = mask_roi_multiple

    def forward(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, torch.Tensor]] | None = None,
    ) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        proposals = [p.to(torch.float32) for p in proposals]
        if self.training:
            if targets is None:
                raise ValueError("the RoI heads need targets while training")
            targets = [{**t, "boxes": t["boxes"].to(torch.float32)} for t in targets]
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(
                proposals, targets
            )
        class_logits, box_deltas = self._box_predictions(features, proposals, image_shapes)
        if self.training:
            losses = self.box_losses(class_logits, box_deltas, labels, regression_targets)
            losses["loss_mask"] = self.mask_loss(
                features, proposals, image_shapes, targets, matched_idxs, labels
            )
            return [], losses
        detections = self.detections(class_logits, box_deltas, proposals, image_shapes)
        boxes = [d["boxes"] for d in detections]
        if sum(len(b) for b in boxes):
            logits = self._mask_logits(features, boxes, image_shapes)
            labels = torch.cat([d["labels"] for d in detections])
            probs = logits[torch.arange(len(labels), device=labels.device), labels].sigmoid()
            for d, p in zip(detections, probs[:, None].split([len(b) for b in boxes])):
                d["masks"] = p
        else:
            size = self.mask_roi_pool.output_size[0] * 2
            for d in detections:
                d["masks"] = d["boxes"].new_zeros((0, 1, size, size))
        return detections, {}

    def _box_predictions(
        self, features, proposals: list[torch.Tensor], image_shapes
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """float32 class logits (R, K+1) and box deltas (R, (K+1)*4) of every proposal."""
        pooled = self.box_roi_pool(features, proposals, image_shapes)
        class_logits, box_deltas = self.box_predictor(self.box_head(pooled))
        return class_logits.float(), box_deltas.float()

    def _mask_logits(self, features, boxes: list[torch.Tensor], image_shapes) -> torch.Tensor:
        """float32 mask logits (R, K+1, M, M) of the boxes. The mask head (no norm layer: the
        RoIs are independent) runs on R rounded up to ``mask_roi_multiple`` with empty RoIs
        (0: ``CUDA_MASK_ROI_MULTIPLE`` on a CUDA device, none elsewhere), so that cuDNN meets a
        few batch sizes: it builds its plans per shape, about 20 ms of host time for each new
        one, and R is new at almost every training step."""
        pooled = self.mask_roi_pool(features, boxes, image_shapes)
        count = pooled.shape[0]
        multiple = self.mask_roi_multiple or (CUDA_MASK_ROI_MULTIPLE if pooled.is_cuda else 1)
        padding = -count % multiple
        if padding:
            pooled = torch.cat([pooled, pooled.new_zeros((padding, *pooled.shape[1:]))])
        return self.mask_predictor(self.mask_head(pooled))[:count].float()

    def box_losses(
        self,
        class_logits: torch.Tensor,
        box_deltas: torch.Tensor,
        labels: list[torch.Tensor],
        regression_targets: list[torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Cross-entropy over the sampled RoIs and the class-specific box loss of the foreground
        ones, divided by the number of sampled RoIs (detectron2's ``FastRCNNOutputLayers``)."""
        labels = torch.cat(labels)
        targets = torch.cat(regression_targets)
        foreground = torch.nonzero(labels > 0).squeeze(1)
        deltas = box_deltas.reshape(len(labels), -1, 4)[foreground, labels[foreground]]
        box_loss = box_regression_loss(deltas, targets[foreground], self.smooth_l1_beta)
        return {
            "loss_classifier": F.cross_entropy(class_logits, labels),
            "loss_box_reg": box_loss / max(labels.numel(), 1),
        }

    def mask_loss(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, torch.Tensor]],
        matched_idxs: list[torch.Tensor],
        labels: list[torch.Tensor],
    ) -> torch.Tensor:
        """Mean BCE of the ground-truth class's mask logits of the foreground RoIs against mask
        targets cut from the ground truth inside each RoI."""
        foreground = [torch.nonzero(lab > 0).squeeze(1) for lab in labels]
        boxes = [p[f] for p, f in zip(proposals, foreground)]
        logits = self._mask_logits(features, boxes, image_shapes)
        if logits.shape[0] == 0:
            return logits.sum() * 0
        size = logits.shape[-1]
        mask_targets = torch.cat(
            [
                self.mask_targets(t["masks"], b, m[f], size)
                for t, b, m, f in zip(targets, boxes, matched_idxs, foreground)
            ]
        )
        gt_labels = torch.cat([lab[f] for lab, f in zip(labels, foreground)])
        logits = logits[torch.arange(len(gt_labels), device=gt_labels.device), gt_labels]
        return F.binary_cross_entropy_with_logits(logits, mask_targets)

    def mask_targets(
        self, gt_masks: torch.Tensor, boxes: torch.Tensor, matched: torch.Tensor, size: int
    ) -> torch.Tensor:
        """gt_masks (G, H, W), boxes (R, 4), matched (R,) gt index -> float32 (R, size, size):
        aligned RoIAlign binarised at 0.5 (detectron2), or torchvision's soft unaligned crop."""
        if boxes.shape[0] == 0:
            return boxes.new_zeros((0, size, size))
        rois = torch.cat([matched[:, None].to(boxes.dtype), boxes], dim=1)
        masks = gt_masks[:, None].to(torch.float32)
        crops = roi_align(masks, rois, (size, size), 1.0, 0, aligned=self.aligned_mask_targets)
        crops = crops[:, 0]
        return (crops >= 0.5).to(torch.float32) if self.aligned_mask_targets else crops

    def detections(
        self,
        class_logits: torch.Tensor,
        box_deltas: torch.Tensor,
        proposals: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> list[dict[str, torch.Tensor]]:
        """detectron2's ``fast_rcnn_inference``: per image, decode class-specific boxes, clip,
        keep (RoI, class) pairs scoring above ``score_thresh``, NMS per class, keep the best
        ``detections_per_img``. Labels are 1..K (torchvision's, 0 = background)."""
        counts = [len(p) for p in proposals]
        boxes = self.box_coder.decode(box_deltas, proposals).reshape(-1, class_logits.shape[1], 4)
        scores = F.softmax(class_logits, -1)
        results = []
        for img_boxes, img_scores, shape in zip(
            boxes.split(counts), scores.split(counts), image_shapes
        ):
            img_boxes, img_scores = img_boxes[:, 1:], img_scores[:, 1:]
            finite = torch.isfinite(img_boxes).all(dim=2).all(dim=1) & torch.isfinite(
                img_scores
            ).all(dim=1)
            if not bool(finite.all()):
                img_boxes, img_scores = img_boxes[finite], img_scores[finite]
            img_boxes = clip_boxes_to_image(img_boxes, shape)
            selected = img_scores > self.score_thresh
            index = torch.nonzero(selected)
            img_boxes, img_scores = img_boxes[selected], img_scores[selected]
            keep = batched_nms_top(
                img_boxes, img_scores, index[:, 1], self.nms_thresh, self.detections_per_img
            )
            results.append(
                {"boxes": img_boxes[keep], "scores": img_scores[keep], "labels": index[keep, 1] + 1}
            )
        return results


def build_roi_heads(cfg, input_shape: dict[str, ShapeSpec]) -> MaskRCNNRoIHeads:
    """Box and mask RoI heads over ``MODEL.ROI_HEADS.IN_FEATURES``."""
    heads = cfg.MODEL.ROI_HEADS
    box, mask = cfg.MODEL.ROI_BOX_HEAD, cfg.MODEL.ROI_MASK_HEAD
    names = list(heads.IN_FEATURES)
    channels = _same_channels(input_shape, names, "MODEL.ROI_HEADS.IN_FEATURES")
    strides = [input_shape[n].stride for n in names]
    num_classes = heads.NUM_CLASSES + 1  # + torchvision's background
    box_head = FastRCNNMLPHead(
        channels, box.POOLER_RESOLUTION, num_fc=box.NUM_FC, fc_dim=box.FC_DIM
    )
    if mask.NUM_CONV < 1:
        raise ValueError(f"MODEL.ROI_MASK_HEAD.NUM_CONV must be >= 1, got {mask.NUM_CONV}")
    mask_aligned = _pooler_aligned(mask.POOLER_TYPE, "MODEL.ROI_MASK_HEAD.POOLER_TYPE")
    return MaskRCNNRoIHeads(
        box_roi_pool=ROIPooler(
            box.POOLER_RESOLUTION,
            featmap_names=names,
            strides=strides,
            sampling_ratio=box.POOLER_SAMPLING_RATIO,
            aligned=_pooler_aligned(box.POOLER_TYPE, "MODEL.ROI_BOX_HEAD.POOLER_TYPE"),
        ),
        box_head=box_head,
        box_predictor=_box_predictor(box_head.output_dim, num_classes),
        fg_iou_thresh=heads.IOU_THRESHOLD,
        bg_iou_thresh=heads.IOU_THRESHOLD,
        batch_size_per_image=heads.BATCH_SIZE_PER_IMAGE,
        positive_fraction=heads.POSITIVE_FRACTION,
        bbox_reg_weights=tuple(box.BBOX_REG_WEIGHTS),
        score_thresh=heads.SCORE_THRESH_TEST,
        nms_thresh=heads.NMS_THRESH_TEST,
        detections_per_img=heads.DETECTIONS_PER_IMAGE,
        mask_roi_pool=ROIPooler(
            mask.POOLER_RESOLUTION,
            featmap_names=names,
            strides=strides,
            sampling_ratio=mask.POOLER_SAMPLING_RATIO,
            aligned=mask_aligned,
        ),
        mask_head=MaskRCNNHeads(channels, [mask.CONV_DIM] * mask.NUM_CONV, dilation=1),
        mask_predictor=_mask_predictor(mask.CONV_DIM, num_classes),
        smooth_l1_beta=box.SMOOTH_L1_BETA,
        aligned_mask_targets=mask_aligned,
        mask_roi_multiple=mask.PAD_ROIS_TO_MULTIPLE,
    )
