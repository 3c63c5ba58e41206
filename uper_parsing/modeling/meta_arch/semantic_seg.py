"""SemanticSegmentor: backbone + semantic head (+ auxiliary head while training)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ...config import configurable, reject_unsupported_keys
from ..backbone import Backbone, build_backbone
from ..inference import InferenceSettings, run_inference
from ..postprocessing import sem_seg_postprocess
from ..sem_seg_heads import build_aux_head, build_sem_seg_head
from .build import META_ARCH_REGISTRY
from .config_keys import INSTANCE_BRANCH, MULTITASK_HEADS
from .preprocessing import normalize_and_pad, same_size_groups, stack_label_maps

__all__ = ["SemanticSegmentor"]


@META_ARCH_REGISTRY.register()
class SemanticSegmentor(nn.Module):
    """Semantic segmentation: a backbone, one semantic head and an optional auxiliary head.

    Input: ``list[dict]`` with ``image`` (3, H, W) uint8, optional ``height`` / ``width`` (output
    size, default H / W), and while training ``sem_seg`` (H, W) long.
    Output: training ``{loss_*: Tensor}``; inference ``[{"sem_seg": Tensor (K, height, width)}]``
    logits (probabilities with test-time augmentation).

    Inference runs ``TEST.MODE`` / ``TEST.AUG`` (``modeling.inference``) over the padded batch,
    or, without ``TEST.PAD_TO_DIVISIBILITY``, over each image alone at its own size (mmseg's
    test); each result is then cropped to its image and resized by ``sem_seg_postprocess``.
    """

    compiled_submodules = ("backbone", "sem_seg_head", "aux_head")  # what MODEL.COMPILE compiles
    unsupported_keys = (*INSTANCE_BRANCH, *MULTITASK_HEADS)  # rejected when set (from_config)

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        sem_seg_head: nn.Module,
        aux_head: nn.Module | None = None,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        size_divisibility: int = 32,
        inference: InferenceSettings | None = None,
    ) -> None:
        """
        Args:
            backbone: feature extractor; its outputs feed both heads.
            sem_seg_head: head following the head contract, with ``ignore_value``.
            aux_head: extra head trained alongside (its loss keys must differ), unused at test.
            pixel_mean, pixel_std: per-channel statistics on the 0-255 scale.
            size_divisibility: batches are padded to multiples of the larger of this and the
                backbone's ``size_divisibility``.
            inference: whole / slide / TTA settings (default: whole image, no TTA).
        """
        super().__init__()
        if len(pixel_mean) != len(pixel_std):
            raise ValueError(f"{len(pixel_mean)} pixel means but {len(pixel_std)} stds")
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        self.aux_head = aux_head
        self.inference = inference if inference is not None else InferenceSettings()
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
            "sem_seg_head": build_sem_seg_head(cfg, shapes),
            "aux_head": build_aux_head(cfg, shapes),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "inference": InferenceSettings.from_config(cfg),
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def size_divisibility(self) -> int:
        return max(self.backbone.size_divisibility, self._size_divisibility)

    def preprocess_image(
        self, batched_inputs: list[dict]
    ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Normalise each image and pad the batch (zeros after normalisation).

        Returns: Tensor (N, 3, H, W) with H, W multiples of ``size_divisibility``, and the
        (h, w) of every image inside it.
        """
        return normalize_and_pad(
            batched_inputs, self.pixel_mean, self.pixel_std, self.size_divisibility
        )

    def preprocess_targets(
        self, batched_inputs: list[dict], image_sizes: list[tuple[int, int]]
    ) -> torch.Tensor:
        """Stack the ``sem_seg`` maps, padded with the head's ignore value.

        Returns: Tensor (N, H, W) long, the size of the padded image batch.
        """
        return stack_label_maps(
            batched_inputs,
            "sem_seg",
            image_sizes,
            size_divisibility=self.size_divisibility,
            ignore_value=self.sem_seg_head.ignore_value,
            device=self.device,
        )

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """images: Tensor (N, 3, H, W) normalised. Returns: Tensor (N, K, H/s, W/s) head logits."""
        return self.sem_seg_head(self.backbone(images))[0]

    def forward(self, batched_inputs: list[dict]) -> dict[str, torch.Tensor] | list[dict]:
        if self.training:
            images, image_sizes = self.preprocess_image(batched_inputs)
            return self._losses(images, self.preprocess_targets(batched_inputs, image_sizes))
        if self.inference.pad_to_divisibility:
            return self._inference(batched_inputs, self.size_divisibility)
        results: list[dict] = [{} for _ in batched_inputs]
        sizes = [tuple(x["image"].shape[-2:]) for x in batched_inputs]
        for group in same_size_groups(sizes):  # unpadded: images of one size at a time
            for i, result in zip(group, self._inference([batched_inputs[i] for i in group], 0)):
                results[i] = result
        return results

    def _inference(self, batched_inputs: list[dict], size_divisibility: int) -> list[dict]:
        """Scores of the images stacked into one batch padded to ``size_divisibility``."""
        images, image_sizes = normalize_and_pad(
            batched_inputs, self.pixel_mean, self.pixel_std, size_divisibility
        )
        scores = run_inference(
            self.logits, images, self.inference, size_divisibility=size_divisibility
        )
        return [
            {
                "sem_seg": sem_seg_postprocess(
                    result, size, x.get("height", size[0]), x.get("width", size[1])
                )
            }
            for result, size, x in zip(scores, image_sizes, batched_inputs)
        ]

    def _losses(self, images: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(images)
        losses = dict(self.sem_seg_head(features, targets)[1])
        if self.aux_head is not None:
            aux_losses = self.aux_head(features, targets)[1]
            clash = losses.keys() & aux_losses.keys()
            if clash:
                raise ValueError(f"auxiliary head loss names {sorted(clash)} clash with the head's")
            losses.update(aux_losses)
        return losses
