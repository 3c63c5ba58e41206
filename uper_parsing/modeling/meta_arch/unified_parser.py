"""UnifiedPerceptualParser (UPerNet paper): scene, object, part, material and texture heads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...config import UnsupportedKey, configurable, reject_unsupported_keys
from ..backbone import Backbone, ResNet, build_backbone
from ..inference import InferenceSettings, run_inference
from ..multitask import ConvClassifierHead, PartHead, SceneHead, grouped_part_cross_entropy
from ..multitask.losses import PART_LOSS_NORMS
from ..postprocessing import sem_seg_postprocess
from ..sem_seg_heads import UPerNetHead
from ..sem_seg_heads.base import select_features
from ..sem_seg_heads.losses import sem_seg_cross_entropy
from .build import META_ARCH_REGISTRY
from .config_keys import AUX_HEAD, INSTANCE_BRANCH
from .preprocessing import normalize_and_pad, same_size_groups, stack_label_maps

__all__ = ["UnifiedPerceptualParser", "TASKS", "PAPER_LOSS_WEIGHTS", "unset_class_keys"]

TASKS = ("object", "part", "material", "scene", "texture")
PAPER_LOSS_WEIGHTS = {"object": 1.0, "part": 0.5, "material": 1.0, "scene": 0.25, "texture": 1.0}
_TEXTURE_TRAINING = ("joint", "second_phase")
# MODEL.SEM_SEG_HEAD keys of a semantic head that the parser's trunk and heads do not read
_SEMANTIC_HEAD_KEYS = (
    UnsupportedKey("MODEL.SEM_SEG_HEAD.NAME", "another trunk than UPerNetHead"),
    UnsupportedKey(
        "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT",
        "a semantic loss weight (its losses take MODEL.MULTITASK.<TASK>_LOSS_WEIGHT)",
    ),
    UnsupportedKey("MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS", "class weights in its losses"),
    UnsupportedKey(
        "MODEL.SEM_SEG_HEAD.LOSS_AVG_NON_IGNORE", "a loss averaged over ignored pixels too"
    ),
    UnsupportedKey(
        "MODEL.SEM_SEG_HEAD.IGNORE_VALUE",
        "a semantic head's ignore value (its own is MODEL.MULTITASK.IGNORE_VALUE)",
    ),
    UnsupportedKey("MODEL.SEM_SEG_HEAD.COMMON_STRIDE", "another head stride than 1/4"),
    UnsupportedKey("MODEL.SEM_SEG_HEAD.NUM_CONVS", "an FCN head's convolutions"),
)
_OBJECT_PART_HEADS = ("conv", "linear")


@META_ARCH_REGISTRY.register()
class UnifiedPerceptualParser(nn.Module):
    """Backbone + UPerNet trunk (PPM on the last level, FPN, fusion at 1/4) + task heads, laid
    out as CSAIL's unifiedparsing (``models/models.py``):

    - object: 3x3 ConvNormAct + 1x1 on the fused map (``object_part_head="linear"``: the
      trunk's dropout + 1x1 instead);
    - part: 3x3 ConvNormAct + 1x1 on the fused map (``"linear"``: a bare 1x1), one channel per
      part, softmax within each object's parts (``object_parts``, the object's "-" part first);
      loss only on ground-truth pixels of the owning object in images where the object has a
      real part labelled (``grouped_part_cross_entropy``);
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
    (K_mat, H, W) logits, ``scene`` (K_scene,) logits, ``texture`` (K_tex,) logits. Inference runs
    ``TEST.MODE`` / ``TEST.AUG`` (``modeling.inference``): dense logits are stitched and averaged
    as logits (the part softmax comes after), scene / texture averaged as class probabilities and
    returned as their log. Every built head is run whatever the input's ``tasks`` (a texture crop
    gets the other outputs too).

    With ``texture_training="second_phase"`` every parameter outside the texture head is frozen
    (``requires_grad`` False, its BatchNorms kept in eval mode), and training batches must be
    texture batches; ``freeze_all_but_texture()`` does the same on a built model.

    Batches train different heads, so DDP must be told ``find_unused_parameters``.
    """

    compiled_submodules = ("backbone", "trunk", "heads")  # what MODEL.COMPILE compiles
    unsupported_keys = (*INSTANCE_BRANCH, AUX_HEAD, *_SEMANTIC_HEAD_KEYS)  # rejected when set

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
        ppm_pool: str = "avg",
        ppm_conv_after_upsample: bool = False,
        norm: str = "BN",
        dropout: float = 0.1,
        texture_in_feature: str = "res2",
        texture_convs_dim: int = 128,
        texture_num_convs: int = 4,
        texture_training: str = "joint",
        object_part_head: str = "conv",
        part_loss_norm: str = "object",
        loss_downsample: int = 1,
        ignore_value: int = 255,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        size_divisibility: int = 32,
        inference: InferenceSettings | None = None,
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
            ppm_pool, ppm_conv_after_upsample: its PPM (see ``UPerNetHead``; CSAIL's checkpoint:
                "prroi", True).
            texture_in_feature: the (detached) feature of the texture head.
            texture_convs_dim, texture_num_convs: the texture head's 3x3 convs.
            texture_training: "joint" or "second_phase" (all but the texture head frozen).
            object_part_head: "conv" (CSAIL: a 3x3 ConvNormAct before the object and part
                classifiers) or "linear" (dropout + 1x1 object classifier, bare 1x1 parts).
            part_loss_norm: "object" (CSAIL: a mean per object, summed) or "pixel" (one mean
                over all part pixels); see ``grouped_part_cross_entropy``.
            loss_downsample: 1: dense logits are resized to the label size for the losses; r > 1
                (CSAIL: 4): the padded label maps are subsampled nearest-neighbour by r (pixel
                (r*i + r//2, r*j + r//2), PIL's nearest) and the logits are used at their stride,
                which must then be r.
            ignore_value: label of unlabelled pixels in the object / part / material maps.
            pixel_mean, pixel_std: per-channel statistics on the 0-255 scale.
            size_divisibility: batches are padded to multiples of the larger of this and the
                backbone's ``size_divisibility``.
            inference: whole / slide / TTA settings (default: whole image, no TTA).
        """
        super().__init__()
        _check_args(tasks, loss_weights, texture_training, len(pixel_mean), len(pixel_std))
        if object_part_head not in _OBJECT_PART_HEADS:
            raise ValueError(
                f"object_part_head must be one of {_OBJECT_PART_HEADS}, got '{object_part_head}'"
            )
        if part_loss_norm not in PART_LOSS_NORMS:
            raise ValueError(
                f"part_loss_norm must be one of {PART_LOSS_NORMS}, got '{part_loss_norm}'"
            )
        if loss_downsample < 1:
            raise ValueError(f"loss_downsample must be >= 1, got {loss_downsample}")
        self.backbone = backbone
        self.object_part_head = object_part_head
        self.part_loss_norm = part_loss_norm
        self.loss_downsample = int(loss_downsample)
        self.tasks = tuple(t for t in TASKS if t in tasks)
        self.loss_weights = {**PAPER_LOSS_WEIGHTS, **(loss_weights or {})}
        self.ignore_value = ignore_value
        self.texture_in_feature = texture_in_feature
        self._size_divisibility = size_divisibility
        self.inference = inference if inference is not None else InferenceSettings()
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
                num_classes=num_objects if object_part_head == "linear" else 0,
                ignore_value=ignore_value,
                convs_dim=convs_dim,
                pool_scales=pool_scales,
                ppm_pool=ppm_pool,
                ppm_conv_after_upsample=ppm_conv_after_upsample,
                norm=norm,
                dropout=dropout,
            )
        heads = {}
        head_convs = 1 if object_part_head == "conv" else 0
        if "object" in self.tasks and head_convs:
            heads["object"] = ConvClassifierHead(
                convs_dim, num_classes=num_objects, channels=convs_dim, num_convs=1, norm=norm
            )
        if "part" in self.tasks:
            heads["part"] = PartHead(
                convs_dim,
                object_parts=object_parts,
                channels=convs_dim,
                num_convs=head_convs,
                norm=norm,
            )
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
        """Class counts, ``object_parts`` and the ignore value come from ``MODEL.MULTITASK``
        (``NUM_OBJECTS`` ...), which set-up fills from the datasets' metadata
        (``tasks.configure_model``); counts of tasks not in ``TASKS`` are not read."""
        reject_unsupported_keys(cfg, cls.__name__, cls.unsupported_keys)
        multitask, head = cfg.MODEL.MULTITASK, cfg.MODEL.SEM_SEG_HEAD
        tasks = list(multitask.TASKS)
        _check_class_config(cfg)
        args = {"num_objects": multitask.NUM_OBJECTS}
        if "part" in tasks:
            args["object_parts"] = [list(parts) for parts in multitask.OBJECT_PARTS]
        for task in ("material", "scene", "texture"):
            if task in tasks:
                args[f"num_{task}s"] = multitask[f"NUM_{task.upper()}S"]
        return {
            **args,
            "backbone": build_backbone(cfg),
            "tasks": tasks,
            "loss_weights": {task: multitask[f"{task.upper()}_LOSS_WEIGHT"] for task in TASKS},
            "in_features": head.IN_FEATURES,
            "convs_dim": head.CONVS_DIM,
            "pool_scales": head.POOL_SCALES,
            "ppm_pool": head.PPM_POOL,
            "ppm_conv_after_upsample": head.PPM_CONV_AFTER_UPSAMPLE,
            "norm": head.NORM,
            "dropout": head.DROPOUT,
            "texture_convs_dim": multitask.TEXTURE_CONVS_DIM,
            "texture_num_convs": multitask.TEXTURE_NUM_CONVS,
            "texture_training": multitask.TEXTURE_TRAINING,
            "object_part_head": multitask.OBJECT_PART_HEAD,
            "part_loss_norm": multitask.PART_LOSS_NORM,
            "loss_downsample": multitask.LOSS_DOWNSAMPLE,
            "ignore_value": multitask.IGNORE_VALUE,
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
        if self.loss_downsample > 1:
            r = self.loss_downsample
            maps = {key: m[:, r // 2 :: r, r // 2 :: r] for key, m in maps.items()}
        losses = {}
        if "object" in tasks:
            logits = self._object_logits(trunk["fused"])
            losses["loss_object"] = self._map_loss(logits, maps["object"])
        if "part" in tasks:
            part = self.heads["part"]
            losses["loss_part"] = grouped_part_cross_entropy(
                self._at_loss_size(part(trunk["fused"]), maps["part"]),
                maps["object"],
                maps["part"],
                part.object_parts,
                normalize=self.part_loss_norm,
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

    def _object_logits(self, fused: torch.Tensor) -> torch.Tensor:
        if "object" in self.heads:
            return self.heads["object"](fused)
        return self.trunk.predict(fused)

    def _at_loss_size(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The logits, checked to match subsampled targets (``loss_downsample`` > 1); with 1 the
        loss functions resize them to the targets."""
        if self.loss_downsample > 1 and logits.shape[-2:] != targets.shape[-2:]:
            raise ValueError(
                f"loss_downsample {self.loss_downsample}: labels subsample to "
                f"{tuple(targets.shape[-2:])} but the logits are {tuple(logits.shape[-2:])} "
                f"(their stride must be {self.loss_downsample})"
            )
        return logits

    def _map_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = self._at_loss_size(logits, targets)
        return sem_seg_cross_entropy(logits, targets, ignore_value=self.ignore_value)

    def _labels(self, batched_inputs: list[dict], key: str) -> torch.Tensor:
        """Returns: Tensor (N,) long, the image-level labels ``key`` of the batch."""
        missing = [i for i, x in enumerate(batched_inputs) if key not in x]
        if missing:
            raise ValueError(f"training inputs {missing} have no '{key}'")
        return torch.tensor([int(x[key]) for x in batched_inputs], device=self.device)

    def task_logits(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images: Tensor (N, 3, H, W) normalised. Returns: {task: logits} of every built task:
        ``object`` / ``part`` / ``material`` Tensor (N, K, H/4, W/4), ``scene`` / ``texture``
        Tensor (N, K)."""
        features = self.backbone(images)
        outputs = {}
        if self.trunk is not None:
            trunk = self.trunk.forward_features(features)
        if "object" in self.tasks:
            outputs["object"] = self._object_logits(trunk["fused"])
        if "part" in self.tasks:
            outputs["part"] = self.heads["part"](trunk["fused"])
        if "material" in self.tasks:
            outputs["material"] = self.heads["material"](trunk["fpn"][0])
        if "scene" in self.tasks:
            outputs["scene"] = self.heads["scene"](trunk["ppm"])
        if "texture" in self.tasks:
            outputs["texture"] = self._texture_logits(features)
        return outputs

    def _inference(
        self, batched_inputs: list[dict], images: torch.Tensor, sizes: list[tuple[int, int]]
    ) -> list[dict]:
        """Outputs of the padded batch, or, without ``TEST.PAD_TO_DIVISIBILITY``, of each image
        alone at its own size (mmseg's test; images of one size together), cropped to each image
        and resized."""
        if self.inference.pad_to_divisibility:
            groups = [list(range(len(batched_inputs)))]
            batches = [(batched_inputs, images, sizes)]
        else:
            groups = same_size_groups(sizes)
            batches = [
                (
                    [batched_inputs[i] for i in group],
                    images[group, :, : sizes[group[0]][0], : sizes[group[0]][1]],
                    [sizes[i] for i in group],
                )
                for group in groups
            ]
        results: list[dict] = [{} for _ in batched_inputs]
        for group, (inputs, batch, batch_sizes) in zip(groups, batches):
            outputs = run_inference(
                self.task_logits,
                batch,
                self.inference,
                size_divisibility=self.size_divisibility,
                average_logits=True,
            )
            if "part" in outputs:
                outputs["part"] = self.heads["part"].probabilities(outputs["part"])
            for i, (index, x, size) in enumerate(zip(group, inputs, batch_sizes)):
                height, width = x.get("height", size[0]), x.get("width", size[1])
                results[index] = {
                    task: sem_seg_postprocess(out[i], size, height, width)
                    if out.dim() == 4
                    else out[i]
                    for task, out in outputs.items()
                }
        return results


def unset_class_keys(cfg) -> list[str]:
    """The ``MODEL.MULTITASK`` keys the parser of ``cfg`` needs that still hold their unset value
    (0, [], -1), which set-up fills from the datasets' metadata (``tasks.configure_model``)."""
    multitask = cfg.MODEL.MULTITASK
    tasks = list(multitask.TASKS)
    unset = ["NUM_OBJECTS"] if multitask.NUM_OBJECTS <= 0 else []
    if "part" in tasks and not list(multitask.OBJECT_PARTS):
        unset.append("OBJECT_PARTS")
    unset += [
        f"NUM_{t.upper()}S"
        for t in ("material", "scene", "texture")
        if t in tasks and multitask[f"NUM_{t.upper()}S"] <= 0
    ]
    unset += ["IGNORE_VALUE"] if multitask.IGNORE_VALUE < 0 else []
    return [f"MODEL.MULTITASK.{key}" for key in unset]


def _check_class_config(cfg) -> None:
    """An error naming the class keys still unset (``unset_class_keys``)."""
    unset = unset_class_keys(cfg)
    if unset:
        raise ValueError(
            f"UnifiedPerceptualParser: {', '.join(unset)} not set; set-up fills them from the "
            "datasets' class lists (uper_parsing.tasks.configure_model(cfg), which "
            "default_setup, DefaultTrainer and Predictor run), or set them in the config"
        )


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
