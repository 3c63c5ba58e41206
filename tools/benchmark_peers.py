"""The peers' side of ``tools/benchmark.py --compare``: our batch through another codebase's model.

Each ``*_step`` function builds the peer's network with random weights (nothing is downloaded;
:func:`build_peer_model` builds it alone, and :func:`peer_weights_as_ours` gives its weights under
our names where the work depends on them, so that both sides start from the same weights),
copying every setting of our config that the peer can express (class counts, backbone depth,
norm and frozen stages, head widths, RPN / RoI sampling, pixel statistics, learning rate and
weight decay), converts the batch our trainer gets into the peer's inputs, and returns the model
(on ``device``, in training mode) with a closure running one training step the way the peer's own
trainer does. Settings of ours the peer cannot express are logged as warnings that name the key.

The closure returns the step's losses as detached 0-dim tensors and never synchronises with the
device: the caller synchronises around it to time it.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from uper_parsing.checkpoint.detectron2 import convert_detectron2_state_dict
from uper_parsing.modeling.meta_arch.preprocessing import normalize_and_pad, stack_label_maps

__all__ = [
    "build_peer_model",
    "peer_weights_as_ours",
    "inference_step",
    "detectron2_inputs",
    "detectron2_panoptic_step",
    "hf_upernet_inputs",
    "hf_upernet_step",
]

logger = logging.getLogger("uper_parsing.benchmark.peers")

LossDict = dict[str, torch.Tensor]

DETECTRON2_CONFIG = "configs/COCO-PanopticSegmentation/panoptic_fpn_R_50_1x.yaml"
"""detectron2's model-zoo recipe the Panoptic FPN peer starts from, relative to its source root."""

SIZE_DIVISIBILITY = 32
"""Our meta-architectures pad batches to multiples of 32; the transformers peer gets the same
tensor size."""

# Our keys that detectron2's config has under the same name and meaning
_DETECTRON2_SAME_KEYS = (
    "MODEL.PIXEL_MEAN",
    "MODEL.PIXEL_STD",
    "MODEL.BACKBONE.FREEZE_AT",
    "MODEL.RESNETS.DEPTH",
    "MODEL.RESNETS.NORM",
    "MODEL.RESNETS.STRIDE_IN_1X1",
    "MODEL.RESNETS.OUT_FEATURES",
    "MODEL.FPN.IN_FEATURES",
    "MODEL.FPN.OUT_CHANNELS",
    "MODEL.FPN.NORM",
    "MODEL.ANCHOR_GENERATOR.SIZES",
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS",
    "MODEL.ANCHOR_GENERATOR.OFFSET",
    "MODEL.RPN.IN_FEATURES",
    "MODEL.RPN.IOU_THRESHOLDS",
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE",
    "MODEL.RPN.POSITIVE_FRACTION",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN",
    "MODEL.RPN.PRE_NMS_TOPK_TEST",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    "MODEL.RPN.NMS_THRESH",
    "MODEL.RPN.SMOOTH_L1_BETA",
    "MODEL.ROI_HEADS.NUM_CLASSES",
    "MODEL.ROI_HEADS.IN_FEATURES",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "MODEL.ROI_HEADS.POSITIVE_FRACTION",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    "MODEL.ROI_HEADS.NMS_THRESH_TEST",
    "MODEL.ROI_BOX_HEAD.NUM_FC",
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION",
    "MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO",
    "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS",
    "MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA",
    "MODEL.ROI_BOX_HEAD.POOLER_TYPE",
    "MODEL.ROI_MASK_HEAD.NUM_CONV",
    "MODEL.ROI_MASK_HEAD.CONV_DIM",
    "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION",
    "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO",
    "MODEL.ROI_MASK_HEAD.POOLER_TYPE",
    "MODEL.SEM_SEG_HEAD.IN_FEATURES",
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
    "MODEL.SEM_SEG_HEAD.IGNORE_VALUE",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM",
    "MODEL.SEM_SEG_HEAD.COMMON_STRIDE",
    "MODEL.SEM_SEG_HEAD.NORM",
    "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT",
    "MODEL.PANOPTIC_FPN.INSTANCE_LOSS_WEIGHT",
    "MODEL.PANOPTIC_FPN.COMBINE.OVERLAP_THRESH",
    "MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT",
    "MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH",
    "INPUT.FORMAT",
    "SOLVER.BASE_LR",
    "SOLVER.MOMENTUM",
    "SOLVER.NESTEROV",
    "SOLVER.WEIGHT_DECAY",
    "SOLVER.WEIGHT_DECAY_NORM",
    "SOLVER.WEIGHT_DECAY_BIAS",
)

# (our key, values either peer reproduces, what the peer does instead)
_SOLVER_LIMITS = (
    ("SOLVER.OPTIMIZER", ("SGD",), "the peer steps with SGD"),
    ("SOLVER.CLIP_GRADIENTS.ENABLED", (False,), "the peer does not clip gradients"),
    ("SOLVER.BACKBONE_MULTIPLIER", (1.0,), "the peer's backbone has the base learning rate"),
    ("SOLVER.LAYER_DECAY.ENABLED", (False,), "the peer has one learning rate"),
    ("SOLVER.WEIGHT_DECAY_OVERRIDES", ([],), "the peer decays by parameter kind only"),
    ("MODEL.CHANNELS_LAST", (False,), "the peer runs in NCHW memory format"),
)
_DETECTRON2_LIMITS = (
    ("MODEL.RESNETS.STEM_TYPE", ("basic",), "detectron2's ResNet has the 7x7 stem"),
    ("MODEL.RESNETS.OUTPUT_STRIDE", (32, 16), "detectron2 dilates res5 only"),
    ("MODEL.FPN.TOP_BLOCK", ("maxpool",), "detectron2's ResNet-FPN always adds p6 by max-pooling"),
    ("MODEL.RPN.SCORE_THRESH", (0.0,), "detectron2's RPN keeps proposals of any score"),
    ("MODEL.SEM_SEG_HEAD.DROPOUT", (0.0,), "detectron2's SemSegFPNHead has no dropout"),
    *_SOLVER_LIMITS,
)
_HF_LIMITS = (
    ("MODEL.RESNETS.STEM_TYPE", ("basic",), "transformers' ResNet has the 7x7 stem"),
    ("MODEL.RESNETS.NORM", ("BN", "SyncBN"), "transformers' ResNet has trained BatchNorms"),
    ("MODEL.RESNETS.OUTPUT_STRIDE", (32,), "transformers' ResNet is not dilated"),
    ("MODEL.BACKBONE.FREEZE_AT", (0,), "transformers' ResNet trains every stage"),
    ("MODEL.SEM_SEG_HEAD.IN_FEATURES", (["res2", "res3", "res4", "res5"],), "HF reads stage1..4"),
    ("MODEL.SEM_SEG_HEAD.NORM", ("BN", "SyncBN"), "transformers' UperNet convs have BatchNorm"),
    ("MODEL.SEM_SEG_HEAD.DROPOUT", (0.0,), "transformers' UperNet head has no dropout"),
    (
        "MODEL.SEM_SEG_HEAD.PPM_CONV_AFTER_UPSAMPLE",
        (False,),
        "transformers convolves, then resizes",
    ),
    ("MODEL.SEM_SEG_HEAD.PPM_POOL", ("avg",), "transformers' pyramid pooling is adaptive average"),
    ("MODEL.SEM_SEG_HEAD.LOSS_AVG_NON_IGNORE", (True,), "HF averages over labelled pixels"),
    ("MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS", ([],), "HF's cross-entropy is unweighted"),
    ("MODEL.AUX_HEAD.IN_FEATURES", (["res4"],), "transformers' auxiliary head reads stage3"),
    ("MODEL.AUX_HEAD.NAME", ("FCNHead",), "transformers' auxiliary head is an FCN head"),
    *_SOLVER_LIMITS,
)

# our MODEL.RESNETS.DEPTH -> transformers' ResNetConfig (layer_type, depths, hidden_sizes)
_HF_RESNETS = {
    18: ("basic", [2, 2, 2, 2], [64, 128, 256, 512]),
    34: ("basic", [3, 4, 6, 3], [64, 128, 256, 512]),
    50: ("bottleneck", [3, 4, 6, 3], [256, 512, 1024, 2048]),
    101: ("bottleneck", [3, 4, 23, 3], [256, 512, 1024, 2048]),
}


def _cfg_value(cfg: Any, key: str) -> Any:
    return functools.reduce(getattr, key.split("."), cfg)


def _require(cfg: Any, key: str, expected: str, peer: str) -> None:
    value = _cfg_value(cfg, key)
    if value != expected:
        raise ValueError(f"{key} is {value!r}: the {peer} peer needs {expected!r}")


def _warn_unmirrored(cfg: Any, limits: Sequence[tuple[str, tuple, str]], peer: str) -> None:
    """Log each of our settings the peer's network or step cannot reproduce."""
    for key, reproduced, instead in limits:
        value = _cfg_value(cfg, key)
        if (list(value) if isinstance(value, tuple) else value) not in reproduced:
            logger.warning("%s peer: %s is %r but %s", peer, key, value, instead)


def _training_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    losses: Callable[[], Mapping[str, torch.Tensor]],
    *,
    device: str,
    amp_dtype: torch.dtype | None,
) -> Callable[[], LossDict]:
    """One step as detectron2's SimpleTrainer / AMPTrainer: forward and loss sum under autocast
    (when ``amp_dtype`` is given), ``zero_grad`` (to None), backward, optimizer step; float16 scales
    the loss with a GradScaler, bfloat16 runs unscaled.

    Returns: a closure giving ``{name: Tensor ()}``, the losses detached (no host sync).
    """
    device_type = torch.device(device).type
    scaler = torch.amp.GradScaler(device_type) if amp_dtype == torch.float16 else None

    def step() -> LossDict:
        if not model.training:
            raise RuntimeError("the peer model was switched to eval mode")
        with torch.autocast(device_type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss_dict = dict(losses())
            total = sum(loss_dict.values())
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            total.backward()
            optimizer.step()
        else:
            scaler.scale(total).backward()
            scaler.step(optimizer)
            scaler.update()
        return {name: value.detach() for name, value in loss_dict.items()}

    return step


# --------------------------------------------------------------------------------------------- #
# detectron2 Panoptic FPN
# --------------------------------------------------------------------------------------------- #


def _import_detectron2(detectron2_root: str | None) -> Path:
    """Import detectron2 (from ``detectron2_root`` first, when given) and return the model-zoo
    config file. Raises ImportError / FileNotFoundError saying what to provide."""
    if detectron2_root is not None and str(detectron2_root) not in sys.path:
        sys.path.insert(0, str(detectron2_root))
    try:
        import detectron2
    except ImportError as e:
        raise ImportError(
            "--compare detectron2 needs detectron2's source on the path (its detectron2/ folder, "
            "no build needed) and its pure-Python requirements cloudpickle, omegaconf and "
            f"antlr4-python3-runtime: {e}"
        ) from e
    package = Path(detectron2.__file__).resolve().parent
    roots = [Path(detectron2_root)] if detectron2_root is not None else []
    candidates = [root / DETECTRON2_CONFIG for root in [*roots, package.parent]]
    candidates.append(package / "model_zoo" / DETECTRON2_CONFIG)  # an installed detectron2
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"detectron2's {DETECTRON2_CONFIG} is in none of {[str(p) for p in candidates]}; give "
        "detectron2_root, the folder holding detectron2's configs/"
    )


def _detectron2_config(cfg: Any, config_file: Path, device: str) -> Any:
    """detectron2's Panoptic FPN recipe with our settings copied in."""
    from detectron2.config import get_cfg as get_detectron2_cfg

    d2 = get_detectron2_cfg()
    d2.merge_from_file(str(config_file))
    overrides: list[Any] = ["MODEL.WEIGHTS", "", "MODEL.DEVICE", device]
    for key in _DETECTRON2_SAME_KEYS:
        overrides += [key, _cfg_value(cfg, key)]
    overrides += ["MODEL.ROI_HEADS.IOU_THRESHOLDS", [cfg.MODEL.ROI_HEADS.IOU_THRESHOLD]]
    overrides += ["TEST.DETECTIONS_PER_IMAGE", cfg.MODEL.ROI_HEADS.DETECTIONS_PER_IMAGE]
    overrides += ["MODEL.RESNETS.RES5_DILATION", 2 if cfg.MODEL.RESNETS.OUTPUT_STRIDE == 16 else 1]
    if cfg.MODEL.RESNETS.DEPTH in (18, 34):
        overrides += ["MODEL.RESNETS.RES2_OUT_CHANNELS", 64]  # detectron2's BasicBlock ResNets
    d2.merge_from_list(overrides)
    d2.freeze()
    return d2


def detectron2_inputs(batch: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Our panoptic training batch as detectron2's Panoptic FPN inputs.

    Args:
        batch: our panoptic mapper's dicts: ``image`` Tensor (3, H, W) uint8, ``sem_seg`` Tensor
            (H, W) int64 (0 things, 1 + s stuff s, ignore value), ``instances`` {``boxes`` (N, 4)
            XYXY, ``labels`` (N,) thing ids, ``masks`` (N, H, W)}, optional ``height`` / ``width``.

    Returns: dicts with the same ``image`` and ``sem_seg`` (as int64, what detectron2's mapper
        gives; the same label convention), ``instances`` = ``Instances((H, W))`` with
        ``gt_boxes`` Boxes (N, 4), ``gt_classes`` (N,) int64 and ``gt_masks`` BitMasks
        (N, H, W), ``height`` / ``width``.
        Tensors stay where they are: detectron2's model moves them, as ours does.
    """
    from detectron2.structures import BitMasks, Boxes, Instances

    converted = []
    for x in batch:
        height, width = x["image"].shape[-2:]
        inst = x["instances"]
        instances = Instances(
            (height, width),
            gt_boxes=Boxes(inst["boxes"].to(torch.float32).reshape(-1, 4)),
            gt_classes=inst["labels"].to(torch.int64),
            gt_masks=BitMasks(inst["masks"].reshape(-1, height, width)),
        )
        converted.append(
            {
                "image": x["image"],
                "sem_seg": x["sem_seg"].long(),  # detectron2's mapper gives int64
                "instances": instances,
                "height": x.get("height", height),
                "width": x.get("width", width),
            }
        )
    return converted


def detectron2_panoptic_model(cfg: Any, *, device: str, detectron2_root: str | None) -> nn.Module:
    """detectron2's Panoptic FPN (``DETECTRON2_CONFIG``) with our config's settings (see
    :func:`detectron2_panoptic_step`), random weights, on ``device``, in training mode."""
    _require(cfg, "MODEL.META_ARCHITECTURE", "PanopticFPN", "detectron2")
    _require(cfg, "MODEL.BACKBONE.NAME", "build_resnet_fpn_backbone", "detectron2")
    _require(cfg, "MODEL.SEM_SEG_HEAD.NAME", "SemSegFPNHead", "detectron2")
    _warn_unmirrored(cfg, _DETECTRON2_LIMITS, "detectron2")
    config_file = _import_detectron2(detectron2_root)
    from detectron2.modeling import build_model

    return build_model(_detectron2_config(cfg, config_file, device)).train()


def detectron2_panoptic_step(
    cfg: Any,
    batch: list[dict],
    *,
    device: str,
    amp_dtype: torch.dtype | None,
    detectron2_root: str | None,
    model: nn.Module | None = None,
) -> tuple[nn.Module, Callable[[], LossDict]]:
    """detectron2's Panoptic FPN (``DETECTRON2_CONFIG``) built like ours (or ``model``, one that
    :func:`detectron2_panoptic_model` built), and one training step of it on ``batch``.

    The recipe's ResNet-FPN, RPN, StandardROIHeads (box + mask) and SemSegFPNHead take our
    config's values for every key listed in ``_DETECTRON2_SAME_KEYS`` (class counts, backbone
    depth / norm / FREEZE_AT, FPN, anchors, RPN and RoI sampling, head widths, pixel mean / std,
    INPUT.FORMAT, learning rate, momentum, weight decays), and ``MODEL.ROI_HEADS.IOU_THRESHOLD``,
    ``DETECTIONS_PER_IMAGE``, ``RESNETS.OUTPUT_STRIDE`` under detectron2's names. Weights are
    random (``MODEL.WEIGHTS`` is cleared, no checkpoint is read). The optimizer is detectron2's
    ``build_optimizer`` (SGD, foreach); the step is ``_training_step``, run inside a detectron2
    ``EventStorage`` because its RPN and RoI heads log sample counts and accuracies to one (each a
    host sync inside the forward, part of detectron2's cost). Left out of detectron2's
    ``run_step``: its ``_write_metrics`` (one ``.item()`` per loss, a gather, a NaN check) and, for
    bfloat16, the GradScaler its AMPTrainer would keep.

    detectron2's compiled ``_C`` extension is not needed: Panoptic FPN's ROIAlign, NMS and box
    ops are torchvision's; ``_C`` is imported only by ``layers/deform_conv.py`` (inside a
    try/except that puts in stand-ins raising on use: deformable convs, off in this recipe) and
    ``evaluation/fast_eval_api.py`` (COCO evaluation, not imported here); rotated-box ops call
    ``torch.ops.detectron2`` only when used. Besides torch, torchvision, numpy, Pillow, pyyaml,
    pycocotools, fvcore and iopath (all ours too), importing detectron2's config needs
    cloudpickle, omegaconf and antlr4-python3-runtime.

    Args:
        cfg: our Panoptic FPN config (``MODEL.META_ARCHITECTURE`` PanopticFPN with a ResNet-FPN
            and the SemSegFPNHead).
        batch: our panoptic mapper's training dicts (see :func:`detectron2_inputs`).
        device: where the model runs ("cuda", "cuda:1", "cpu").
        amp_dtype: torch.float16 / torch.bfloat16 for mixed precision, None for float32.
        detectron2_root: folder holding detectron2's ``detectron2/`` package and ``configs/``
            (an export of its source), put first on ``sys.path``; None: an importable detectron2
            and the ``configs/`` beside its package (or inside an installed one's ``model_zoo``).

    Returns: the model (on ``device``, training mode) and a closure running one step, returning
        ``{loss_sem_seg, loss_rpn_cls, loss_rpn_loc, loss_cls, loss_box_reg, loss_mask}`` as
        detached Tensor ().
    """
    if model is None:
        model = detectron2_panoptic_model(cfg, device=device, detectron2_root=detectron2_root)
    model = model.to(device).train()
    config_file = _import_detectron2(detectron2_root)
    from detectron2.solver import build_optimizer

    d2 = _detectron2_config(cfg, config_file, device)
    step = _training_step(
        model,
        build_optimizer(d2, model),
        detectron2_losses(model, batch),
        device=device,
        amp_dtype=amp_dtype,
    )
    return model, step


def detectron2_losses(
    model: nn.Module, batch: list[dict]
) -> Callable[[], Mapping[str, torch.Tensor]]:
    """A closure computing detectron2's training losses of ``model`` on ``batch``, inside an
    ``EventStorage`` (its RPN and RoI heads log to one)."""
    from detectron2.utils.events import EventStorage

    inputs = detectron2_inputs(batch)
    storage = EventStorage(0)

    def losses() -> Mapping[str, torch.Tensor]:
        with storage:
            return model(inputs)

    return losses


# --------------------------------------------------------------------------------------------- #
# transformers UperNet
# --------------------------------------------------------------------------------------------- #


def _hf_upernet_config(cfg: Any) -> Any:
    """transformers' ``UperNetConfig`` of our UPerNet config, on transformers' ResNet."""
    from transformers import ResNetConfig, UperNetConfig

    depth = cfg.MODEL.RESNETS.DEPTH
    if depth not in _HF_RESNETS:
        raise ValueError(f"MODEL.RESNETS.DEPTH is {depth}: the transformers peer has {_HF_RESNETS}")
    layer_type, depths, widths = _HF_RESNETS[depth]
    backbone = ResNetConfig(
        layer_type=layer_type,
        depths=depths,
        hidden_sizes=widths,
        embedding_size=64,
        downsample_in_bottleneck=cfg.MODEL.RESNETS.STRIDE_IN_1X1,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    head, aux = cfg.MODEL.SEM_SEG_HEAD, cfg.MODEL.AUX_HEAD
    return UperNetConfig(
        backbone_config=backbone,
        num_labels=head.NUM_CLASSES,
        hidden_size=head.CONVS_DIM,
        pool_scales=list(head.POOL_SCALES),
        loss_ignore_index=head.IGNORE_VALUE,
        use_auxiliary_head=aux.ENABLED,
        auxiliary_channels=aux.CONVS_DIM,
        auxiliary_num_convs=aux.NUM_CONVS,
        auxiliary_loss_weight=aux.LOSS_WEIGHT,
        auxiliary_concat_input=False,
    )


def hf_upernet_inputs(
    batch: Sequence[Mapping[str, Any]],
    pixel_mean: torch.Tensor,
    pixel_std: torch.Tensor,
    ignore_value: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Our semantic training batch as transformers' ``pixel_values`` and ``labels``, prepared as
    our SemanticSegmentor prepares it (its own ``normalize_and_pad`` and ``stack_label_maps``):
    each image moved to the device of ``pixel_mean`` and normalised, then the batch padded
    (images with 0, labels with ``ignore_value``) to multiples of ``SIZE_DIVISIBILITY``.

    Args:
        batch: dicts with ``image`` Tensor (3, h_i, w_i) uint8, already in the channel order of
            ``INPUT.FORMAT`` (the order of the pixel statistics), and ``sem_seg`` (h_i, w_i).
        pixel_mean, pixel_std: Tensor (3, 1, 1) on the 0-255 scale, on the model's device.

    Returns: ``pixel_values`` Tensor (N, 3, H, W) float32 and ``labels`` Tensor (N, H, W) int64.
    """
    pixel_values, sizes = normalize_and_pad(list(batch), pixel_mean, pixel_std, SIZE_DIVISIBILITY)
    labels = stack_label_maps(
        list(batch),
        "sem_seg",
        sizes,
        size_divisibility=SIZE_DIVISIBILITY,
        ignore_value=ignore_value,
        device=pixel_mean.device,
    )
    return pixel_values, labels


def hf_upernet_model(cfg: Any, *, device: str) -> nn.Module:
    """transformers' UperNet of our config (see :func:`hf_upernet_step`), random weights, on
    ``device``, in training mode."""
    _require(cfg, "MODEL.META_ARCHITECTURE", "SemanticSegmentor", "transformers UperNet")
    _require(cfg, "MODEL.BACKBONE.NAME", "build_resnet_backbone", "transformers UperNet")
    _require(cfg, "MODEL.SEM_SEG_HEAD.NAME", "UPerNetHead", "transformers UperNet")
    _warn_unmirrored(cfg, _HF_LIMITS, "transformers UperNet")
    from transformers import UperNetForSemanticSegmentation

    return UperNetForSemanticSegmentation(_hf_upernet_config(cfg)).to(device).train()


def hf_upernet_step(
    cfg: Any,
    batch: list[dict],
    *,
    device: str,
    amp_dtype: torch.dtype | None,
    model: nn.Module | None = None,
) -> tuple[nn.Module, Callable[[], LossDict]]:
    """transformers' ``UperNetForSemanticSegmentation`` on its own ResNet, built like our UPerNet
    (or ``model``, one that :func:`hf_upernet_model` built), and one training step of it on
    ``batch``.

    Copied from our config: ResNet depth (18 / 34 / 50 / 101) and ``STRIDE_IN_1X1`` (as
    ``downsample_in_bottleneck``), ``SEM_SEG_HEAD`` NUM_CLASSES, CONVS_DIM (``hidden_size``),
    POOL_SCALES, IGNORE_VALUE, ``AUX_HEAD`` ENABLED, CONVS_DIM, NUM_CONVS, LOSS_WEIGHT; weights
    random. The step: inputs prepared by :func:`hf_upernet_inputs` (on the device, as ours does
    inside its forward), ``model(pixel_values, labels=labels).loss`` (decode + weighted auxiliary
    cross-entropy on logits resized to the input) under autocast, backward, then
    ``torch.optim.SGD`` over all parameters with our BASE_LR, MOMENTUM, NESTEROV and WEIGHT_DECAY
    (one group: transformers has no optimizer recipe of its own for this model).

    Args:
        cfg: our config of a SemanticSegmentor with ``build_resnet_backbone`` and ``UPerNetHead``.
        batch: our semantic mapper's training dicts (``image`` (3, H, W) uint8, ``sem_seg``).
        device: where the model runs.
        amp_dtype: torch.float16 / torch.bfloat16 for mixed precision, None for float32.

    Returns: the model (on ``device``, training mode) and a closure running one step, returning
        ``{"total_loss": Tensor ()}`` detached (transformers returns the weighted sum only).
    """
    if model is None:
        model = hf_upernet_model(cfg, device=device)
    model = model.to(device).train()
    solver = cfg.SOLVER
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=solver.BASE_LR,
        momentum=solver.MOMENTUM,
        nesterov=solver.NESTEROV,
        weight_decay=solver.WEIGHT_DECAY,
    )
    losses = hf_upernet_losses(cfg, model, batch, device=device)
    return model, _training_step(model, optimizer, losses, device=device, amp_dtype=amp_dtype)


def hf_upernet_losses(
    cfg: Any, model: nn.Module, batch: list[dict], *, device: str
) -> Callable[[], Mapping[str, torch.Tensor]]:
    """A closure computing transformers' UperNet loss (``{"total_loss"}``) of ``model`` on
    ``batch``, its inputs prepared by :func:`hf_upernet_inputs` on ``device``."""
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN, device=device).view(-1, 1, 1)
    std = torch.tensor(cfg.MODEL.PIXEL_STD, device=device).view(-1, 1, 1)
    ignore = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE

    def losses() -> Mapping[str, torch.Tensor]:
        pixel_values, labels = hf_upernet_inputs(batch, mean, std, ignore)
        return {"total_loss": model(pixel_values=pixel_values, labels=labels).loss}

    return losses


# --------------------------------------------------------------------------------------------- #
# both peers
# --------------------------------------------------------------------------------------------- #

PEER_NAMES = ("hf-upernet", "detectron2")
# peers whose cost depends on their weights: ours loads theirs (peer_weights_as_ours)
WEIGHT_DEPENDENT_PEERS = ("detectron2",)


def build_peer_model(
    name: str, cfg: Any, *, device: str, detectron2_root: str | None = None
) -> nn.Module:
    """The network of peer ``name`` (one of ``PEER_NAMES``) for our config, random weights."""
    if name == "hf-upernet":
        return hf_upernet_model(cfg, device=device)
    if name == "detectron2":
        return detectron2_panoptic_model(cfg, device=device, detectron2_root=detectron2_root)
    raise ValueError(f"unknown peer {name!r}; expected one of {PEER_NAMES}")


def training_losses(
    name: str, cfg: Any, model: nn.Module, batch: list[dict], *, device: str
) -> Callable[[], Mapping[str, torch.Tensor]]:
    """A closure computing the training losses of peer ``name``'s ``model`` (in training mode,
    on ``device``) on ``batch``: what its training step differentiates."""
    if name == "hf-upernet":
        return hf_upernet_losses(cfg, model, batch, device=device)
    if name == "detectron2":
        return detectron2_losses(model, batch)
    raise ValueError(f"unknown peer {name!r}; expected one of {PEER_NAMES}")


def peer_weights_as_ours(name: str, model: nn.Module) -> dict[str, torch.Tensor] | None:
    """The weights of the peer's ``model`` under our model's names, where the work of a step
    depends on them, else None.

    detectron2's Panoptic FPN: how many proposals its RPN keeps after NMS depends on the weights,
    and with it the cost of NMS and of the RoI heads (random weights of each side's own
    initialisation kept 4,000 of 8,600 boxes on our side against 800 of 5,900 on detectron2's
    after 17 steps), so ours loads the peer's weights (converted by the project's own
    ``convert_detectron2_state_dict``) and both sides do the same work. transformers' UperNet
    costs the same with any weights (and its stem may differ from ours): None."""
    if name == "detectron2":
        state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
        return convert_detectron2_state_dict(state).state_dict
    if name == "hf-upernet":
        return None
    raise ValueError(f"unknown peer {name!r}; expected one of {PEER_NAMES}")


# --------------------------------------------------------------------------------------------- #
# inference
# --------------------------------------------------------------------------------------------- #


def inference_step(
    name: str,
    cfg: Any,
    model: nn.Module,
    batch: Sequence[Mapping[str, Any]],
    *,
    device: str,
    amp_dtype: torch.dtype | None,
) -> Callable[[], Any]:
    """The peer ``name``'s inference on the images of ``batch``, as its own predictor runs it
    (model in eval mode, no gradients, under autocast when ``amp_dtype``).

    - ``hf-upernet``: the images normalised with our pixel statistics and padded as for training,
      then ``model(pixel_values).logits``, which transformers returns resized to the input size.
    - ``detectron2``: ``model([{"image", "height", "width"}, ...])``: detections, mask pasting
      and the panoptic merge at the image size.
    """
    model.eval()
    device_type = torch.device(device).type
    dtype = amp_dtype or torch.float32
    if name == "hf-upernet":
        mean = torch.tensor(cfg.MODEL.PIXEL_MEAN, device=device).view(-1, 1, 1)
        std = torch.tensor(cfg.MODEL.PIXEL_STD, device=device).view(-1, 1, 1)
        images = list(batch)

        def run() -> Any:
            with torch.inference_mode(), torch.autocast(device_type, dtype, amp_dtype is not None):
                pixel_values, _ = normalize_and_pad(images, mean, std, SIZE_DIVISIBILITY)
                return model(pixel_values=pixel_values).logits

        return run
    if name == "detectron2":
        inputs = [
            {"image": x["image"], "height": x["image"].shape[-2], "width": x["image"].shape[-1]}
            for x in batch
        ]

        def run_detectron2() -> Any:
            with torch.inference_mode(), torch.autocast(device_type, dtype, amp_dtype is not None):
                return model(inputs)

        return run_detectron2
    raise ValueError(f"unknown peer {name!r}; expected hf-upernet or detectron2")
