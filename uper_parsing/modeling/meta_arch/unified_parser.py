"""UnifiedPerceptualParser (UPerNet paper): scene, object, part, material and texture heads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...config import configurable
from ...data.catalog import MetadataCatalog
from ...layers import resize_to
from ..backbone import Backbone, ResNet, build_backbone
from ..multitask import ConvClassifierHead, PartHead, SceneHead, grouped_part_cross_entropy
from ..postprocessing import sem_seg_postprocess
from ..sem_seg_heads import UPerNetHead
from ..sem_seg_heads.base import select_features
from ..sem_seg_heads.losses import sem_seg_cross_entropy
from .build import META_ARCH_REGISTRY
from .preprocessing import normalize_and_pad, stack_label_maps

__all__ = ["UnifiedPerceptualParser", "TASKS", "PAPER_LOSS_WEIGHTS"]

TASKS = ("object", "part", "material", "scene", "texture")
PAPER_LOSS_WEIGHTS = {"object": 1.0, "part": 0.5, "material": 1.0, "scene": 0.25, "texture": 1.0}
_TEXTURE_TRAINING = ("joint", "second_phase")
_MAP_TASKS = ("object", "part", "material")  # dense outputs (K, H, W); the others are (K,)


@META_ARCH_REGISTRY.register()
class UnifiedPerceptualParser(nn.Module):
    """Backbone + UPerNet trunk (PPM on the last level, FPN, fusion at 1/4) + task heads:

    - object: UPerNet's own classifier on the fused map (dropout + 1x1);
    - part: 1x1 classifier on the fused map, one channel per part, softmax within each object's
      parts (``object_parts``); loss only on ground-truth pixels of the owning object;
    - material: 3x3 ConvNormAct + 1x1 on the finest FPN level;
    - scene: 3x3 ConvNormAct + global average pool + linear on the PPM output;
    - texture: ``texture_num_convs`` x 3x3 ConvNormAct + 1x1 on the *detached* ``res2``; the
      image-level logits are the spatial mean of the per-pixel logits.

    Input: ``list[dict]`` with ``image`` (3, H, W) uint8, ``height`` / ``width`` (output size,
    default H / W); while training ``tasks`` (the same for every image of the batch) and the
    targets of those tasks: ``object``, ``part`` (global part ids), ``material`` (long (H, W),
    ``ignore_value`` = unlabelled), ``scene``, ``texture`` (int). A part batch needs ``object``.

    Training output: ``{"loss_<task>": weighted loss}`` for every task both built and labelled in
    the batch; the heads of the other tasks are not run (no loss key, no gradient). A texture-only
    batch runs the backbone only up to ``res2``, without gradient (a trainable-BN backbone still
    updates its stem / res2 running statistics on it; the default FrozenBN does not).

    Inference output, one dict per image at (height, width), one key per built task: ``object``
    (K_obj, H, W) logits, ``part`` (P, H, W) per-object softmax probabilities, ``material``
    (K_mat, H, W) logits, ``scene`` (K_scene,) logits, ``texture`` (K_tex,) logits. Inference is
    whole-image; every built head is run whatever the input's ``tasks`` (a texture crop gets
    the other outputs too).

    With ``texture_training="second_phase"`` every parameter outside the texture head is frozen
    (``requires_grad`` False, its BatchNorms kept in eval mode), and training batches must be
    texture batches; ``freeze_all_but_texture()`` does the same on a built model.

    Batches train different heads, so DDP must be told ``find_unused_parameters``.
    """

    find_unused_parameters = True

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        num_objects: int,
        object_parts: Sequence[Sequence[int]] = (),
        num_materials: int = 0,
        num_scenes: int = 0,
        num_textures: int = 0,
        tasks: Sequence[str] = TASKS,
        loss_weights: Mapping[str, float] | None = None,
        in_features: Sequence[str] = ("res2", "res3", "res4", "res5"),
        convs_dim: int = 512,
        pool_scales: Sequence[int] = (1, 2, 3, 6),
        norm: str = "BN",
        dropout: float = 0.1,
        texture_in_feature: str = "res2",
        texture_convs_dim: int = 128,
        texture_num_convs: int = 4,
        texture_training: str = "joint",
        ignore_value: int = 255,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        size_divisibility: int = 32,
    ) -> None:
        """
        Args:
            backbone: feature extractor with ``in_features`` and ``texture_in_feature`` outputs.
            num_objects: object classes (the UPerNet trunk's classifier).
            object_parts: for each object index, the global part ids it owns (``[]`` for none);
                a partition of 0..P-1 (needed with "part").
            num_materials, num_scenes, num_textures: classes of those heads (needed when built).
            tasks: heads to build, a subset of ``TASKS``.
            loss_weights: {task: weight}; missing tasks take ``PAPER_LOSS_WEIGHTS``.
            in_features, convs_dim, pool_scales, norm, dropout: the UPerNet trunk.
            texture_in_feature: the (detached) feature of the texture head.
            texture_convs_dim, texture_num_convs: the texture head's 3x3 convs.
            texture_training: "joint" or "second_phase" (all but the texture head frozen).
            ignore_value: label of unlabelled pixels in the object / part / material maps.
            pixel_mean, pixel_std: per-channel statistics on the 0-255 scale.
            size_divisibility: batches are padded to multiples of the larger of this and the
                backbone's ``size_divisibility``.
        """
        super().__init__()
        _check_args(tasks, loss_weights, texture_training, len(pixel_mean), len(pixel_std))
        self.backbone = backbone
        self.tasks = tuple(t for t in TASKS if t in tasks)
        self.loss_weights = {**PAPER_LOSS_WEIGHTS, **(loss_weights or {})}
        self.ignore_value = ignore_value
        self.texture_in_feature = texture_in_feature
        self._size_divisibility = size_divisibility
        self.register_buffer(
            "pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False
        )
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)

        shapes = backbone.output_shape()
        counts = {"material": num_materials, "scene": num_scenes, "texture": num_textures}
        for task, count in counts.items():
            if task in self.tasks and count < 1:
                raise ValueError(f"task '{task}' is built but num_{task}s is {count}")
        if "part" in self.tasks and len(object_parts) != num_objects:
            raise ValueError(
                f"object_parts has {len(object_parts)} entries for {num_objects} objects"
            )
        self.trunk = None
        if set(self.tasks) - {"texture"}:
            self.trunk = UPerNetHead(
                select_features(shapes, in_features),
                num_classes=num_objects,
                ignore_value=ignore_value,
                convs_dim=convs_dim,
                pool_scales=pool_scales,
                norm=norm,
                dropout=dropout,
            )
        heads = {}
        if "part" in self.tasks:
            heads["part"] = PartHead(convs_dim, object_parts=object_parts)
        if "material" in self.tasks:
            heads["material"] = ConvClassifierHead(
                convs_dim, num_classes=num_materials, channels=convs_dim, num_convs=1, norm=norm
            )
        if "scene" in self.tasks:
            heads["scene"] = SceneHead(
                convs_dim, num_classes=num_scenes, channels=convs_dim, norm=norm
            )
        if "texture" in self.tasks:
            heads["texture"] = ConvClassifierHead(
                select_features(shapes, [texture_in_feature])[texture_in_feature].channels,
                num_classes=num_textures,
                channels=texture_convs_dim,
                num_convs=texture_num_convs,
                norm=norm,
            )
        self.heads = nn.ModuleDict(heads)
        self.texture_training = "joint"
        if texture_training == "second_phase":
            self.freeze_all_but_texture()

    @classmethod
    def from_config(cls, cfg) -> dict:
        """Class counts and ``object_parts`` come from the metadata of ``DATASETS.TRAIN[0]``;
        metadata of tasks that are not in ``MODEL.MULTITASK.TASKS`` is not read."""
        meta = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
        multitask, head = cfg.MODEL.MULTITASK, cfg.MODEL.SEM_SEG_HEAD
        tasks = list(multitask.TASKS)
        args = {"num_objects": len(meta.object_classes)}
        if "part" in tasks:
            args["object_parts"] = [list(parts) for parts in meta.object_parts]
            num_parts = sum(len(parts) for parts in args["object_parts"])
            if num_parts != len(meta.part_classes):
                raise ValueError(
                    f"{meta.name}: object_parts owns {num_parts} parts but part_classes has "
                    f"{len(meta.part_classes)}"
                )
        for task in ("material", "scene", "texture"):
            if task in tasks:
                args[f"num_{task}s"] = len(getattr(meta, f"{task}_classes"))
        return {
            **args,
            "backbone": build_backbone(cfg),
            "tasks": tasks,
            "loss_weights": {task: multitask[f"{task.upper()}_LOSS_WEIGHT"] for task in TASKS},
            "in_features": head.IN_FEATURES,
            "convs_dim": head.CONVS_DIM,
            "pool_scales": head.POOL_SCALES,
            "norm": head.NORM,
            "dropout": head.DROPOUT,
            "texture_convs_dim": multitask.TEXTURE_CONVS_DIM,
            "texture_num_convs": multitask.TEXTURE_NUM_CONVS,
            "texture_training": multitask.TEXTURE_TRAINING,
            "ignore_value": meta.ignore_label,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def size_divisibility(self) -> int:
        return max(self.backbone.size_divisibility, self._size_divisibility)

    def freeze_all_but_texture(self) -> UnifiedPerceptualParser:
        """Texture second phase: every parameter but the texture head's stops requiring
        gradients, and the frozen modules stay in eval mode (BatchNorm statistics kept).
        Training batches must then be texture batches. Returns self."""
        if "texture" not in self.tasks:
            raise ValueError("texture second phase needs the 'texture' task")
        for module in self._modules_outside_texture():
            module.requires_grad_(False)
        self.texture_training = "second_phase"
        return self.train(self.training)

    def train(self, mode: bool = True) -> UnifiedPerceptualParser:
        super().train(mode)
        if getattr(self, "texture_training", "joint") == "second_phase":
            for module in self._modules_outside_texture():
                module.eval()
        return self

    def _modules_outside_texture(self) -> list[nn.Module]:
        heads = [head for task, head in self.heads.items() if task != "texture"]
        return [m for m in (self.backbone, self.trunk, *heads) if m is not None]

    def forward(self, batched_inputs: list[dict]) -> dict[str, torch.Tensor] | list[dict]:
        images, image_sizes = normalize_and_pad(
            batched_inputs, self.pixel_mean, self.pixel_std, self.size_divisibility
        )
        if self.training:
            return self._losses(batched_inputs, images, image_sizes)
        return self._inference(batched_inputs, images, image_sizes)

    def batch_tasks(self, batched_inputs: list[dict]) -> tuple[str, ...]:
        """The tasks a training batch trains: built, labelled in the batch (every image must
        carry the same ``tasks``) and, in the texture second phase, only "texture"."""
        labelled = {frozenset(x.get("tasks", ())) for x in batched_inputs}
        if len(labelled) != 1:
            raise ValueError(f"images of a training batch have different tasks: {labelled}")
        trainable = ("texture",) if self.texture_training == "second_phase" else self.tasks
        batch = labelled.pop()
        tasks = tuple(t for t in trainable if t in batch)
        if not tasks:
            raise ValueError(
                f"training batch labels none of the trained tasks {trainable}: "
                f"{batched_inputs[0].get('tasks')}"
            )
        return tasks

    def _features(self, images: torch.Tensor, tasks: Sequence[str]) -> dict[str, torch.Tensor]:
        """The backbone features; for texture alone, only ``texture_in_feature`` (of a ResNet,
        computed up to that stage) without gradient."""
        if set(tasks) != {"texture"}:
            return self.backbone(images)
        with torch.no_grad():
            if not isinstance(self.backbone, ResNet):
                return {self.texture_in_feature: self.backbone(images)[self.texture_in_feature]}
            x = self.backbone.stem(images)
            for name in self.backbone.stage_names:
                x = getattr(self.backbone, name)(x)
                if name == self.texture_in_feature:
                    return {name: x}
        raise ValueError(f"'{self.texture_in_feature}' is not a stage of the backbone")

    def _texture_logits(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Returns: Tensor (N, K_tex) image-level logits (mean of the per-pixel logits)."""
        return self.heads["texture"](features[self.texture_in_feature].detach()).mean(dim=(-2, -1))

    def _losses(
        self, batched_inputs: list[dict], images: torch.Tensor, sizes: list[tuple[int, int]]
    ) -> dict[str, torch.Tensor]:
        tasks = self.batch_tasks(batched_inputs)
        features = self._features(images, tasks)
        trunk = self.trunk.forward_features(features) if set(tasks) - {"texture"} else {}
        maps = {
            key: stack_label_maps(
                batched_inputs,
                key,
                sizes,
                size_divisibility=self.size_divisibility,
                ignore_value=self.ignore_value,
                device=self.device,
            )
            for key in {"object", "part", "material"}
            if key in tasks or (key == "object" and "part" in tasks)
        }
        losses = {}
        if "object" in tasks:
            logits = self.trunk.predict(trunk["fused"])
            losses["loss_object"] = self._map_loss(logits, maps["object"])
        if "part" in tasks:
            part = self.heads["part"]
            losses["loss_part"] = grouped_part_cross_entropy(
                part(trunk["fused"]), maps["object"], maps["part"], part.object_parts
            )
        if "material" in tasks:
            logits = self.heads["material"](trunk["fpn"][0])
            losses["loss_material"] = self._map_loss(logits, maps["material"])
        if "scene" in tasks:
            logits = self.heads["scene"](trunk["ppm"])
            losses["loss_scene"] = F.cross_entropy(logits, self._labels(batched_inputs, "scene"))
        if "texture" in tasks:
            labels = self._labels(batched_inputs, "texture")
            losses["loss_texture"] = F.cross_entropy(self._texture_logits(features), labels)
        return {key: loss * self.loss_weights[key[len("loss_") :]] for key, loss in losses.items()}

    def _map_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return sem_seg_cross_entropy(logits, targets, ignore_value=self.ignore_value)

    def _labels(self, batched_inputs: list[dict], key: str) -> torch.Tensor:
        """Returns: Tensor (N,) long, the image-level labels ``key`` of the batch."""
        missing = [i for i, x in enumerate(batched_inputs) if key not in x]
        if missing:
            raise ValueError(f"training inputs {missing} have no '{key}'")
        return torch.tensor([int(x[key]) for x in batched_inputs], device=self.device)

    def _inference(
        self, batched_inputs: list[dict], images: torch.Tensor, sizes: list[tuple[int, int]]
    ) -> list[dict]:
        features = self.backbone(images)
        outputs = {}
        if self.trunk is not None:
            trunk = self.trunk.forward_features(features)
        if "object" in self.tasks:
            outputs["object"] = self.trunk.predict(trunk["fused"])
        if "part" in self.tasks:
            part = self.heads["part"]
            outputs["part"] = part.probabilities(part(trunk["fused"]))
        if "material" in self.tasks:
            outputs["material"] = self.heads["material"](trunk["fpn"][0])
        if "scene" in self.tasks:
            outputs["scene"] = self.heads["scene"](trunk["ppm"])
        if "texture" in self.tasks:
            outputs["texture"] = self._texture_logits(features)
        padded = images.shape[-2:]
        dense = {task: resize_to(outputs[task], padded) for task in _MAP_TASKS if task in outputs}
        results = []
        for i, (x, size) in enumerate(zip(batched_inputs, sizes)):
            height, width = x.get("height", size[0]), x.get("width", size[1])
            result = {
                task: sem_seg_postprocess(s[i], size, height, width) for task, s in dense.items()
            }
            result.update(
                {task: outputs[task][i] for task in ("scene", "texture") if task in outputs}
            )
            results.append(result)
        return results


def _check_args(
    tasks: Sequence[str],
    loss_weights: Mapping[str, float] | None,
    texture_training: str,
    num_means: int,
    num_stds: int,
) -> None:
    unknown = [t for t in [*tasks, *(loss_weights or {})] if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(
            f"tasks must be a non-empty subset of {TASKS}, got {list(tasks)} {unknown}"
        )
    if texture_training not in _TEXTURE_TRAINING:
        raise ValueError(
            f"texture_training must be one of {_TEXTURE_TRAINING}, got '{texture_training}'"
        )
    if num_means != num_stds:
        raise ValueError(f"{num_means} pixel means but {num_stds} stds")
