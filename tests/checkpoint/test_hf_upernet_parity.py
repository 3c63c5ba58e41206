"""transformers' UperNetForSemanticSegmentation -> ours: a small randomly initialised transformers
UperNet (ResNet, ConvNeXt and Swin backbones, auxiliary head on) is converted with
``convert_hf_upernet_state_dict``, our model is built from ``config_overrides_from_hf`` of its
config, the Checkpointer fills every tensor from the transformers weights file, and both models
give the same logits (decode head and auxiliary head, resized to the input as transformers does)
at two input sizes, one of them not a multiple of 32."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from transformers import (
    ConvNextConfig,
    ResNetConfig,
    SwinConfig,
    UperNetConfig,
    UperNetForSemanticSegmentation,
)

from uper_parsing.checkpoint import Checkpointer
from uper_parsing.checkpoint.hf_upernet import (
    config_overrides_from_hf,
    convert_hf_upernet_state_dict,
    is_hf_upernet_state_dict,
)
from uper_parsing.config import get_cfg
from uper_parsing.modeling import build_model

NUM_CLASSES = 5
STAGES = ["stage1", "stage2", "stage3", "stage4"]
SIZES = [(160, 192), (136, 168)]  # the second is not a multiple of 32
TOLERANCE = 1e-4  # fp32 max abs difference of the logits
SWIN_WINDOW = 4  # the stage maps of SIZES (down to 5 x 6 at stride 32) are all larger


def _resnet_config() -> ResNetConfig:
    # Our ResNet is torchvision's: a Bottleneck ResNet has R-50's widths and depths
    return ResNetConfig(layer_type="bottleneck", depths=[3, 4, 6, 3], out_features=STAGES)


def _convnext_config() -> ConvNextConfig:
    # TimmBackbone builds timm models by name: the smallest plain timm ConvNeXt is convnext_tiny
    return ConvNextConfig(
        hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 9, 3], out_features=STAGES
    )


def _swin_config() -> SwinConfig:
    return SwinConfig(
        embed_dim=24,
        depths=[1, 1, 2, 1],
        num_heads=[1, 2, 3, 4],
        window_size=SWIN_WINDOW,
        out_features=STAGES,
    )


BACKBONES = {"resnet": _resnet_config, "convnext": _convnext_config, "swin": _swin_config}


def _random_value(name: str, shape: torch.Size, g: torch.Generator) -> torch.Tensor:
    """Weights ~ N(0, 1 / fan_in); Swin's relative position bias ~ N(0, 1); norm scales and
    ConvNeXt's layer scale ~ U(0.5, 1.5); biases ~ N(0, 0.2)."""
    if name.endswith("relative_position_bias_table"):
        return torch.randn(shape, generator=g)
    if len(shape) > 1:
        return torch.randn(shape, generator=g) / shape[1:].numel() ** 0.5
    if name.endswith(("weight", "layer_scale_parameter")):
        return torch.rand(shape, generator=g) + 0.5
    return torch.randn(shape, generator=g) * 0.2


def _randomise_(model: nn.Module) -> None:
    """Every parameter and BatchNorm statistic drawn at random (transformers' init leaves
    ConvNeXt blocks near identities (layer scale 1e-6), Swin's position bias at 0 and BN as
    identity in eval mode), so every tensor shapes the logits."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(_random_value(name, param.shape, g))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.fixture(scope="module", autouse=True)
def _free_models():
    """The transformers models are built once per backbone and released after this module."""
    yield
    _hf_model.cache_clear()


@functools.cache
def _hf_model(backbone: str) -> UperNetForSemanticSegmentation:
    torch.manual_seed(0)
    config = UperNetConfig(
        backbone_config=BACKBONES[backbone](),
        hidden_size=32,
        num_labels=NUM_CLASSES,
        auxiliary_channels=16,
        use_auxiliary_head=True,
    )
    model = UperNetForSemanticSegmentation(config).eval()
    _randomise_(model)
    return model


def _our_model(hf: UperNetForSemanticSegmentation, tmp_path, caplog) -> nn.Module:
    """Ours, built from the HF config and loaded by the Checkpointer from the converted file."""
    cfg = get_cfg()
    cfg.merge_from_list(config_overrides_from_hf(hf.config.to_dict()))
    # the test feeds normalised tensors to both models
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.PIXEL_MEAN", "[0.0, 0.0, 0.0]"])
    cfg.merge_from_list(["MODEL.PIXEL_STD", "[1.0, 1.0, 1.0]"])
    # each image at its own size, as transformers runs it (no padding to a multiple of 32)
    cfg.merge_from_list(["TEST.PAD_TO_DIVISIBILITY", "False"])
    model = build_model(cfg).eval()
    conversion = convert_hf_upernet_state_dict(hf.state_dict())
    ours = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    assert set(conversion.state_dict) == ours  # nothing missing, nothing unexpected
    # the weights file of a transformers model folder, recognised and converted on load
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, path)
    with caplog.at_level(logging.INFO, logger="uper_parsing.checkpoint"):
        Checkpointer(model).load(str(path))
    assert "Every model tensor loaded" in caplog.text
    return model


def _upsampled(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """transformers' resize of the head logits to the input size."""
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def _run_capturing(module: nn.Module, run: Callable[[], Any]) -> tuple[Any, Any]:
    """``run()`` and the output of ``module`` during it."""
    captured = []
    handle = module.register_forward_hook(lambda m, args, out: captured.append(out))
    try:
        result = run()
    finally:
        handle.remove()
    return result, captured[0]


def _hf_logits(hf: UperNetForSemanticSegmentation, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """transformers' forward: its logits, and its auxiliary head's output (computed in forward,
    returned only inside the loss) resized as forward resizes it."""
    logits, aux = _run_capturing(hf.auxiliary_head, lambda: hf(pixel_values=x).logits)
    return {"sem_seg": logits, "aux": _upsampled(aux, x.shape[-2:])}


def _our_logits(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Our model's inference on the image (normalised already: mean 0, std 1) at its own size,
    and our auxiliary head (unused at inference) on the backbone features of that run."""
    image = {"image": x[0], "height": x.shape[-2], "width": x.shape[-1]}
    results, features = _run_capturing(model.backbone, lambda: model([image]))
    aux = model.aux_head(features)[0]
    return {"sem_seg": results[0]["sem_seg"][None], "aux": _upsampled(aux, x.shape[-2:])}


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_logits_equal_transformers(backbone, tmp_path, caplog):
    hf = _hf_model(backbone)
    ours = _our_model(hf, tmp_path, caplog)
    g = torch.Generator().manual_seed(2)
    for size in SIZES:
        x = torch.randn(1, 3, *size, generator=g)
        with torch.no_grad():
            theirs, mine = _hf_logits(hf, x), _our_logits(ours, x)
        for head in ("sem_seg", "aux"):
            assert mine[head].shape == theirs[head].shape == (1, NUM_CLASSES, *size)
            diff = (mine[head] - theirs[head]).abs().max().item()
            scale = theirs[head].abs().max().item()
            print(f"{backbone} {size} {head}: max |diff| {diff:.2e} (max |logit| {scale:.2f})")
            assert diff <= TOLERANCE, (backbone, size, head, diff)


# transformers 5 name -> the name in the hub's files (written by transformers 4, before the renames
# in transformers' conversion_mapping.py "swin" / "SwinBackbone")
HUB_SWIN_NAMES = [
    ("backbone.swin.", "backbone."),
    ("attention.q_proj.", "attention.self.query."),
    ("attention.k_proj.", "attention.self.key."),
    ("attention.v_proj.", "attention.self.value."),
    ("attention.relative_position_bias.", "attention.self."),
    ("attention.o_proj.", "attention.output.dense."),
    ("mlp.fc1.", "intermediate.dense."),
    ("mlp.fc2.", "output.dense."),
]


def _hub_swin_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers 5 Swin UperNet state dict as the hub's files hold it: old module names,
    the relative position index stored, no final ``swin.layernorm``."""
    hub = {}
    for key, value in state.items():
        if key.startswith("backbone.swin.layernorm."):
            continue
        for new, old in HUB_SWIN_NAMES:
            key = key.replace(new, old)
        hub[key] = value
        if key.endswith("attention.self.relative_position_bias_table"):
            index = key.replace("bias_table", "index")
            hub[index] = torch.zeros(SWIN_WINDOW**4, dtype=torch.long)
    return hub


def test_hub_swin_names_convert_like_transformers_5_names():
    state = _hf_model("swin").state_dict()
    hub = _hub_swin_state(state)
    assert any(k.endswith("attention.self.query.weight") for k in hub)
    ours, from_hub = convert_hf_upernet_state_dict(state), convert_hf_upernet_state_dict(hub)
    assert from_hub.state_dict.keys() == ours.state_dict.keys()
    for key, value in ours.state_dict.items():
        assert torch.equal(from_hub.state_dict[key], value), key
    assert sum(k.endswith("relative_position_index") for k in from_hub.ignored) == 5


# config.json of the hub's upernet-swin-base and upernet-convnext-tiny: what transformers'
# conversion scripts set (convert_{swin,convnext}_upernet_to_pytorch.py), the rest its defaults
HUB_SWIN_BASE = {
    "backbone_config": {
        "model_type": "swin",
        "embed_dim": 128,
        "depths": [2, 2, 18, 2],
        "num_heads": [4, 8, 16, 32],
        "window_size": 12,
        "out_features": STAGES,
    },
    "auxiliary_in_channels": 512,
    "id2label": {str(i): f"class{i}" for i in range(150)},
}
HUB_CONVNEXT_TINY = {
    "backbone_config": {
        "model_type": "convnext",
        "depths": [3, 3, 9, 3],
        "hidden_sizes": [96, 192, 384, 768],
        "out_features": STAGES,
    },
    "auxiliary_in_channels": 384,
    "id2label": {str(i): f"class{i}" for i in range(150)},
}


def _merged(hf_config: dict):
    cfg = get_cfg()
    cfg.merge_from_list(config_overrides_from_hf(hf_config))
    return cfg


def test_config_of_hub_swin_base():
    cfg = _merged(HUB_SWIN_BASE)
    swin = cfg.MODEL.SWIN
    assert cfg.MODEL.BACKBONE.NAME == "build_swin_backbone"
    assert (swin.EMBED_DIM, swin.WINDOW_SIZE, swin.DEPTHS) == (128, 12, [2, 2, 18, 2])
    assert (swin.NUM_HEADS, swin.DROP_PATH_RATE, swin.APE) == ([4, 8, 16, 32], 0.1, False)
    head, aux = cfg.MODEL.SEM_SEG_HEAD, cfg.MODEL.AUX_HEAD
    assert (head.NAME, head.NUM_CLASSES, head.CONVS_DIM) == ("UPerNetHead", 150, 512)
    assert head.IN_FEATURES == ["res2", "res3", "res4", "res5"]
    assert (aux.ENABLED, aux.NAME, aux.IN_FEATURES, aux.CONVS_DIM) == (
        True,
        "FCNHead",
        ["res4"],
        256,
    )


def test_config_of_hub_convnext_tiny():
    cfg = _merged(HUB_CONVNEXT_TINY)
    timm = cfg.MODEL.TIMM
    assert cfg.MODEL.BACKBONE.NAME == "build_timm_backbone"
    assert (timm.NAME, timm.OUT_INDICES, timm.OUT_NORM) == ("convnext_tiny", [0, 1, 2, 3], "LN")
    assert timm.DROP_PATH_RATE == 0.0
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 150
    assert (cfg.MODEL.AUX_HEAD.IN_FEATURES, cfg.MODEL.AUX_HEAD.LOSS_WEIGHT) == (["res4"], 0.4)


def test_config_of_resnet_101_with_stride_in_1x1():
    backbone = {"model_type": "resnet", "depths": [3, 4, 23, 3], "out_features": STAGES}
    cfg = _merged({"backbone_config": {**backbone, "downsample_in_bottleneck": True}})
    assert (cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.RESNETS.STRIDE_IN_1X1) == (101, True)
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 2  # transformers' default labels


def test_config_without_backbone_config_is_transformers_default_resnet_50():
    cfg = _merged({"num_labels": 150, "use_auxiliary_head": False})
    assert (cfg.MODEL.BACKBONE.NAME, cfg.MODEL.RESNETS.DEPTH) == ("build_resnet_backbone", 50)
    assert cfg.MODEL.RESNETS.OUT_FEATURES == ["res2", "res3", "res4", "res5"]
    assert not cfg.MODEL.AUX_HEAD.ENABLED


@pytest.mark.parametrize(
    "hf_config, named",
    [
        ({**HUB_SWIN_BASE, "auxiliary_in_channels": 384}, "auxiliary_in_channels=384"),
        ({**HUB_SWIN_BASE, "auxiliary_concat_input": True}, "auxiliary_concat_input=True"),
        (
            {"backbone_config": {"model_type": "resnet", "hidden_sizes": [32, 64, 128, 256]}},
            r"hidden_sizes=\[32, 64, 128, 256\]",
        ),
        ({"backbone_config": {"model_type": "dinat"}}, "model_type='dinat'"),
    ],
)
def test_config_without_counterpart_is_an_error_naming_it(hf_config, named):
    with pytest.raises(ValueError, match=named):
        config_overrides_from_hf(hf_config)


def test_recognises_transformers_names():
    hf_keys = ["decode_head.classifier.weight", "decode_head.bottleneck.batch_norm.weight"]
    mmseg_keys = ["decode_head.conv_seg.weight", "decode_head.bottleneck.bn.weight"]
    assert is_hf_upernet_state_dict(hf_keys)
    assert not is_hf_upernet_state_dict(mmseg_keys)


@pytest.mark.parametrize(
    "unknown", ["decode_head.extra_conv.weight", "backbone.encoder.stages.0.layers.0.gate.weight"]
)
def test_unknown_key_is_an_error_naming_it(unknown):
    state = {**_hf_model("resnet").state_dict(), unknown: torch.zeros(1)}
    with pytest.raises(ValueError, match=re.escape(unknown)):
        convert_hf_upernet_state_dict(state)


def test_state_dict_without_known_backbone_is_an_error():
    state = {
        "decode_head.classifier.weight": torch.zeros(1),
        "backbone.stem.weight": torch.zeros(1),
    }
    with pytest.raises(ValueError, match=r"no transformers ResNet / ConvNeXt / Swin backbone"):
        convert_hf_upernet_state_dict(state)
