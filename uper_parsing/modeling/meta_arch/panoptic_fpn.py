"""PanopticFPN: ResNet-FPN + Mask R-CNN (torchvision's RPN and RoI heads) + a semantic branch."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList

from ...config import configurable, reject_unsupported_keys
from ...layers import resize_to
from ..backbone import Backbone, build_backbone
from ..instance_heads import build_roi_heads, build_rpn
from ..postprocessing import (
    combine_semantic_and_instance_outputs,
    detector_postprocess,
    sem_seg_postprocess,
)
from ..sem_seg_heads import build_sem_seg_head
from .build import META_ARCH_REGISTRY
from .config_keys import (
    AUX_HEAD,
    MULTITASK_HEADS,
    SLIDING_WINDOW,
    TEST_TIME_AUGMENTATION,
    UNPADDED_INFERENCE,
)
from .preprocessing import normalize_and_pad, stack_label_maps

__all__ = ["CombineSettings", "PanopticFPN"]

# torchvision's loss names -> detectron2's (the names users of either expect in logs).
_LOSS_NAMES = {
    "loss_objectness": "loss_rpn_cls",
    "loss_rpn_box_reg": "loss_rpn_loc",
    "loss_classifier": "loss_cls",
    "loss_box_reg": "loss_box_reg",
    "loss_mask": "loss_mask",
}


@dataclass(frozen=True)
class CombineSettings:
    """How instances and stuff are merged (``MODEL.PANOPTIC_FPN.COMBINE``)."""

    enabled: bool = True
    overlap_thresh: float = 0.5
    stuff_area_limit: int = 4096
    instances_confidence_thresh: float = 0.5

    @classmethod
    def from_config(cls, cfg) -> CombineSettings:
        c = cfg.MODEL.PANOPTIC_FPN.COMBINE
        return cls(
            enabled=c.ENABLED,
            overlap_thresh=c.OVERLAP_THRESH,
            stuff_area_limit=c.STUFF_AREA_LIMIT,
            instances_confidence_thresh=c.INSTANCES_CONFIDENCE_THRESH,
        )


@META_ARCH_REGISTRY.register()
class PanopticFPN(nn.Module):
    """Panoptic FPN (Kirillov et al. 2019): one FPN feeds torchvision's RPN and RoI heads (boxes,
    classes, masks of things) and a semantic head over the stuff classes plus one "things" class.

    Input: ``list[dict]`` with ``image`` (3, H, W) uint8 in ``INPUT.FORMAT``, optional ``height`` /
    ``width``; while training ``sem_seg`` long (H, W) (0 things, 1 + s stuff s, 255 ignore) and
    ``instances`` = {``boxes`` (N, 4) XYXY, ``labels`` (N,) thing ids 0..K-1, ``masks`` (N, H, W)}.

    Output: training ``{loss_rpn_cls, loss_rpn_loc, loss_cls, loss_box_reg, loss_mask,
    loss_sem_seg}`` (box and mask losses times ``instance_loss_weight``, RPN losses unweighted;
    the semantic head applies its own weight); inference, per image at ``height`` x ``width``:
    ``sem_seg`` (K_st + 1, H, W) logits, ``instances`` {``boxes``, ``scores``, ``labels``,
    ``masks`` bool (N, H, W)} and, when combining is enabled, ``panoptic_seg`` = (seg_map int32
    (H, W), segments_info).

    Normalisation happens here, once: images stay uint8 0-255 until the model subtracts
    ``pixel_mean`` and divides by ``pixel_std`` (0-255 scale), which equals torchvision's
    0-1 conversion followed by its ImageNet normalisation. torchvision's own resizing transform
    is not used: the mapper resizes, so the network sees exactly what the mapper produced.
    """

    compiled_submodules = ("backbone", "sem_seg_head")  # what MODEL.COMPILE compiles
    # rejected when set (from_config): inference is one padded whole-image pass
    unsupported_keys = (
        AUX_HEAD,
        TEST_TIME_AUGMENTATION,
        SLIDING_WINDOW,
        UNPADDED_INFERENCE,
        *MULTITASK_HEADS,
    )

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        rpn: nn.Module,
        roi_heads: nn.Module,
        sem_seg_head: nn.Module,
        rpn_in_features: Sequence[str],
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        instance_loss_weight: float = 1.0,
        combine: CombineSettings | None = None,
        size_divisibility: int = 32,
    ) -> None:
        """
        Args:
            backbone: an FPN (or any backbone whose outputs include the RPN / RoI / head levels).
            rpn: torchvision ``RegionProposalNetwork`` (``modeling.instance_heads.build_rpn``).
            roi_heads: torchvision ``RoIHeads`` with a mask branch (``build_roi_heads``).
            sem_seg_head: semantic head over K_st + 1 classes (class 0 = things).
            rpn_in_features: backbone outputs the RPN reads, in anchor-size order.
            pixel_mean, pixel_std: per-channel statistics on the 0-255 scale.
            instance_loss_weight: weight of the RoI-head (box and mask) losses; the RPN losses
                keep weight 1, as in detectron2.
            combine: instance / stuff merging settings.
            size_divisibility: batches are padded to multiples of the larger of this and the
                backbone's ``size_divisibility``.
        """
        super().__init__()
        if len(pixel_mean) != len(pixel_std):
            raise ValueError(f"{len(pixel_mean)} pixel means but {len(pixel_std)} stds")
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.sem_seg_head = sem_seg_head
        self.rpn_in_features = list(rpn_in_features)
        self.instance_loss_weight = instance_loss_weight
        self.combine = combine if combine is not None else CombineSettings()
        self._size_divisibility = size_divisibility
        self.register_buffer(
            "pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False
        )
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)

    @classmethod
    def from_config(cls, cfg) -> dict:
        reject_unsupported_keys(cfg, cls.__name__, cls.unsupported_keys)
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        return {
            "backbone": backbone,
            "rpn": build_rpn(cfg, shapes),
            "roi_heads": build_roi_heads(cfg, shapes),
            "sem_seg_head": build_sem_seg_head(cfg, shapes),
            "rpn_in_features": cfg.MODEL.RPN.IN_FEATURES,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "instance_loss_weight": cfg.MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT,
            "combine": CombineSettings.from_config(cfg),
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def size_divisibility(self) -> int:
        return max(self.backbone.size_divisibility, self._size_divisibility)

    def forward(self, batched_inputs: list[dict]) -> dict[str, torch.Tensor] | list[dict]:
        images, image_sizes = normalize_and_pad(
            batched_inputs, self.pixel_mean, self.pixel_std, self.size_divisibility
        )
        features = self.backbone(images)
        image_list = ImageList(images, image_sizes)
        rpn_features = OrderedDict((name, features[name]) for name in self.rpn_in_features)
        if self.training:
            return self._losses(batched_inputs, image_list, features, rpn_features)
        return self._inference(batched_inputs, image_list, features, rpn_features)

    def _instance_targets(self, batched_inputs: list[dict]) -> list[dict[str, torch.Tensor]]:
        """torchvision targets (labels shifted by one: 0 is its background)."""
        targets = []
        for i, x in enumerate(batched_inputs):
            if "instances" not in x:
                raise ValueError(f"training input {i} ({x.get('file_name')}) has no 'instances'")
            inst = x["instances"]
            boxes = inst["boxes"].to(self.device, dtype=torch.float32).reshape(-1, 4)
            targets.append(
                {
                    "boxes": boxes,
                    "labels": inst["labels"].to(self.device, dtype=torch.int64) + 1,
                    "masks": inst["masks"].to(self.device, dtype=torch.uint8),
                }
            )
        return targets

    def _losses(
        self,
        batched_inputs: list[dict],
        images: ImageList,
        features: dict[str, torch.Tensor],
        rpn_features: OrderedDict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        targets = self._instance_targets(batched_inputs)
        proposals, rpn_losses = self.rpn(images, rpn_features, targets)
        _, roi_losses = self.roi_heads(features, proposals, images.image_sizes, targets)
        # detectron2: the instance weight scales the box and mask losses, never the RPN's
        losses = {_LOSS_NAMES[k]: v for k, v in rpn_losses.items()}
        losses.update(
            {_LOSS_NAMES[k]: v * self.instance_loss_weight for k, v in roi_losses.items()}
        )
        sem_targets = stack_label_maps(
            batched_inputs,
            "sem_seg",
            images.image_sizes,
            size_divisibility=self.size_divisibility,
            ignore_value=self.sem_seg_head.ignore_value,
            device=self.device,
        )
        losses.update(self.sem_seg_head(features, sem_targets)[1])
        return losses

    def _inference(
        self,
        batched_inputs: list[dict],
        images: ImageList,
        features: dict[str, torch.Tensor],
        rpn_features: OrderedDict[str, torch.Tensor],
    ) -> list[dict]:
        proposals, _ = self.rpn(images, rpn_features)
        detections, _ = self.roi_heads(features, proposals, images.image_sizes)
        logits = self.sem_seg_head(features)[0]
        logits = resize_to(logits, images.tensors.shape[-2:])
        results = []
        for x, size, det, sem in zip(batched_inputs, images.image_sizes, detections, logits):
            height, width = x.get("height", size[0]), x.get("width", size[1])
            det = {**det, "labels": det["labels"] - 1}
            result = {
                "sem_seg": sem_seg_postprocess(sem, size, height, width),
                "instances": detector_postprocess(det, size, height, width),
            }
            if self.combine.enabled:
                result["panoptic_seg"] = combine_semantic_and_instance_outputs(
                    result["instances"],
                    result["sem_seg"].argmax(dim=0),
                    overlap_threshold=self.combine.overlap_thresh,
                    stuff_area_thresh=self.combine.stuff_area_limit,
                    instances_score_thresh=self.combine.instances_confidence_thresh,
                )
            results.append(result)
        return results
