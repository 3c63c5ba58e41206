"""MODEL.BACKBONE.PRETRAINED: one path (``checkpoint.load_backbone_weights``) loads every backbone
kind from every format it accepts, every tensor placed, values unchanged (Swin: the numbers timm
computes with the same weights).

Source names are written here from each codebase's modules, independently of the converters:
detectron2 (``conv1.norm``, ``shortcut``), mmcv's ResNetV1c (Sequential stem ``stem.0/1/3/4/6/7``,
``layer1..4``), CSAIL's deep-base ResNets (``conv1..3``, ``bn1..3``), facebookresearch ConvNeXt
(``downsample_layers``, ``stages.{i}.{j}.dwconv / pwconv1``, ``norm``, ``head``), mmpretrain's
ConvNeXt (``depthwise_conv``, ``pointwise_conv1``, ``norm3``), the Microsoft Swin release (patch
merging at the end of a stage, ``relative_position_index`` / ``attn_mask`` buffers, ``head``) and
mmseg's Swin (``patch_embed.projection``, ``attn.w_msa``, ``ffn.layers``, patch merging channels
in ``nn.Unfold`` order).
"""

from __future__ import annotations

import logging
import pickle
import re

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from _tools import load_tool
from safetensors.torch import save_file

from uper_parsing.checkpoint import Checkpointer, load_backbone_weights
from uper_parsing.config import get_cfg
from uper_parsing.modeling import ResNet, build_model
from uper_parsing.modeling.backbone.swin import SwinTransformer
from uper_parsing.modeling.backbone.timm_backbone import TimmBackbone

SWIN = {"embed_dim": 16, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 2, 4), "window_size": 7}


def _tool_main(argv: list[str]) -> int:
    return load_tool("convert_weights").main(argv)


def _random(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Distinct random values for every float tensor (counters kept)."""
    generator = torch.Generator().manual_seed(0)
    return {
        k: torch.randn(v.shape, generator=generator) if v.is_floating_point() else v.clone()
        for k, v in state.items()
    }


def _assert_loaded(backbone: torch.nn.Module, expected: dict[str, torch.Tensor], caplog) -> None:
    """Every tensor of ``expected`` (backbone names) is in the backbone; nothing reported."""
    own = backbone.state_dict()
    for key, value in expected.items():
        assert torch.equal(own[key], value), key
    assert "Backbone tensors" not in caplog.text, caplog.text


# ----------------------------------------------------------------------------- ResNet


@pytest.fixture(scope="module")
def resnet18():
    """Random ResNet-18 weights with this project's names (basic stem)."""
    return _random(ResNet(depth=18, norm="BN").state_dict())


def _to_torchvision(key: str) -> str:
    key = re.sub(r"^stem\.", "", key)
    return re.sub(r"^res(\d)\.", lambda m: f"layer{int(m[1]) - 1}.", key)


def _to_detectron2(key: str) -> str:
    key = re.sub(r"^stem\.bn1\.", "stem.conv1.norm.", key)
    key = re.sub(r"\.bn(\d)\.", r".conv\1.norm.", key)
    return key.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")


def test_resnet_from_torchvision_safetensors(resnet18, tmp_path, caplog):
    tv = {_to_torchvision(k): v for k, v in resnet18.items()}
    tv.update({"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)})
    assert set(tv) == set(torchvision.models.resnet18().state_dict())
    save_file(tv, str(tmp_path / "resnet18.safetensors"))
    with caplog.at_level(logging.INFO, logger="uper_parsing"):
        backbone = ResNet(depth=18, norm="BN", pretrained=str(tmp_path / "resnet18.safetensors"))
    _assert_loaded(backbone, resnet18, caplog)
    assert "2 ignored (fc.bias, fc.weight)" in caplog.text


def test_resnet_from_a_detectron2_model_pkl(resnet18, tmp_path, caplog):
    model = {
        f"backbone.bottom_up.{_to_detectron2(k)}": v.numpy()
        for k, v in resnet18.items()
        if not k.endswith("num_batches_tracked")
    }
    model["sem_seg_head.predictor.weight"] = torch.zeros(3, 128, 1, 1).numpy()
    with open(tmp_path / "model_final.pkl", "wb") as f:
        pickle.dump({"model": model, "__author__": "Detectron2 Model Zoo"}, f)
    backbone = ResNet(depth=18, norm="BN")
    with caplog.at_level(logging.INFO, logger="uper_parsing"):
        load_backbone_weights(backbone, (tmp_path / "model_final.pkl").as_uri())
    assert "loading its backbone.bottom_up part" in caplog.text
    expected = {k: v for k, v in resnet18.items() if not k.endswith("num_batches_tracked")}
    _assert_loaded(backbone, expected, caplog)


_V1C_STEM = {"conv1": "0", "bn1": "1", "conv2": "3", "bn2": "4", "conv3": "6", "bn3": "7"}


def test_resnet_v1c_from_mmcv(tmp_path, caplog):
    ours = _random(ResNet(depth=18, norm="BN", stem_type="deep").state_dict())
    mmcv = {}
    for key, value in ours.items():
        name = re.sub(r"^stem\.(\w+)\.", lambda m: f"stem.{_V1C_STEM[m[1]]}.", key)
        mmcv[re.sub(r"^res(\d)\.", lambda m: f"layer{int(m[1]) - 1}.", name)] = value
    mmcv.update({"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)})
    torch.save({"state_dict": mmcv, "meta": {}}, tmp_path / "resnet18_v1c-b5776b93.pth")
    with caplog.at_level(logging.INFO, logger="uper_parsing"):
        backbone = ResNet(
            depth=18,
            norm="BN",
            stem_type="deep",
            pretrained=str(tmp_path / "resnet18_v1c-b5776b93.pth"),
        )
    _assert_loaded(backbone, ours, caplog)


def test_resnet_from_csail_imagenet_weights(tmp_path, caplog):
    ours = _random(ResNet(depth=18, norm="BN", stem_type="deep_base").state_dict())
    csail = {
        re.sub(r"^res(\d)\.", lambda m: f"layer{int(m[1]) - 1}.", re.sub(r"^stem\.", "", k)): v
        for k, v in ours.items()
    }
    csail.update({"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)})
    torch.save(csail, tmp_path / "resnet18-imagenet.pth")
    backbone = ResNet(depth=18, norm="BN", stem_type="deep_base")
    with caplog.at_level(logging.INFO, logger="uper_parsing"):
        load_backbone_weights(backbone, str(tmp_path / "resnet18-imagenet.pth"))
    expected = {k: v for k, v in ours.items() if not k.endswith("num_batches_tracked")}
    _assert_loaded(backbone, expected, caplog)


def test_resnet_from_our_files(resnet18, tmp_path, caplog):
    """A converted file (source record) and the backbone of one of our whole-model checkpoints."""
    torch.save({_to_torchvision(k): v for k, v in resnet18.items()}, tmp_path / "tv.pth")
    assert (
        _tool_main(["--from", "torchvision", str(tmp_path / "tv.pth"), str(tmp_path / "r18.pth")])
        == 0
    )
    with caplog.at_level(logging.INFO, logger="uper_parsing"):
        backbone = ResNet(depth=18, norm="BN", pretrained=str(tmp_path / "r18.pth"))
    _assert_loaded(backbone, resnet18, caplog)

    cfg = get_cfg()
    cfg.merge_from_list(
        ["MODEL.DEVICE", "cpu", "MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.NORM", "BN",
         "MODEL.SEM_SEG_HEAD.CONVS_DIM", 16]
    )  # fmt: skip
    model = build_model(cfg)
    model.backbone.load_state_dict(resnet18)
    Checkpointer(model, str(tmp_path / "run")).save("model_final")
    backbone = ResNet(depth=18, norm="BN")
    load_backbone_weights(backbone, str(tmp_path / "run" / "model_final.pth"))
    _assert_loaded(backbone, resnet18, caplog)


def test_weights_that_fit_no_backbone_are_an_error(resnet18, tmp_path):
    torch.save({_to_torchvision(k): v for k, v in resnet18.items()}, tmp_path / "tv.pth")
    with pytest.raises(ValueError, match="MODEL.BACKBONE.PRETRAINED=.*tv.pth.*do not fit"):
        load_backbone_weights(SwinTransformer(**SWIN), str(tmp_path / "tv.pth"))


# ----------------------------------------------------------------------------- TimmBackbone


@pytest.fixture(scope="module")
def convnext_atto():
    """Random timm ConvNeXt-Atto weights with timm's names, classifier and final norm included."""
    return _random(timm.create_model("convnext_atto").state_dict())


def _to_facebook(key: str) -> str:
    key = re.sub(r"^stem\.", "downsample_layers.0.", key)
    key = re.sub(r"^stages\.(\d)\.downsample\.", r"downsample_layers.\1.", key)
    key = re.sub(r"^stages\.(\d)\.blocks\.(\d+)\.", r"stages.\1.\2.", key)
    key = key.replace(".conv_dw.", ".dwconv.").replace(".mlp.fc", ".pwconv")
    return key.replace("head.norm.", "norm.").replace("head.fc.", "head.")


def _to_mmpretrain(key: str) -> str:
    key = _to_facebook(key)
    key = key.replace(".dwconv.", ".depthwise_conv.").replace(".pwconv", ".pointwise_conv")
    key = re.sub(r"^norm\.", "norm3.", key)  # mmpretrain's out_indices=-1 output norm
    return "head.fc." + key[len("head.") :] if key.startswith("head.") else "backbone." + key


@pytest.mark.parametrize("layout", ["timm", "facebook", "ours"])
def test_timm_backbone_from_convnext_checkpoints(layout, convnext_atto, tmp_path, caplog):
    features = {k: v for k, v in convnext_atto.items() if not k.startswith("head.")}
    path = tmp_path / "convnext_atto.pth"
    if layout == "facebook":
        torch.save({"model": {_to_facebook(k): v for k, v in convnext_atto.items()}}, path)
    else:
        torch.save(convnext_atto, path)
    if layout == "ours":
        out = tmp_path / "convnext_atto.safetensors"
        assert _tool_main(["--from", "timm", str(path), str(out)]) == 0
        path = out
    backbone = TimmBackbone(name="convnext_atto")
    with caplog.at_level(logging.INFO, logger="uper_parsing"):
        load_backbone_weights(backbone, str(path))
    _assert_loaded(backbone, {f"model.{k}": v for k, v in features.items()}, caplog)


def test_timm_backbone_from_mmpretrain_convnext(convnext_atto, tmp_path, caplog):
    mmpretrain = {_to_mmpretrain(k): v for k, v in convnext_atto.items()}
    torch.save({"state_dict": mmpretrain, "meta": {}}, tmp_path / "convnext-atto_in1k.pth")
    backbone = TimmBackbone(name="convnext_atto", out_norm="LN")
    with caplog.at_level(logging.INFO, logger="uper_parsing"):
        load_backbone_weights(backbone, str(tmp_path / "convnext-atto_in1k.pth"))
    expected = {f"model.{k}": v for k, v in convnext_atto.items() if not k.startswith("head.")}
    expected["norms.res5.weight"] = convnext_atto["head.norm.weight"]
    own = backbone.state_dict()
    assert all(torch.equal(own[k], v) for k, v in expected.items())
    assert "norms: 6 missing (res2.weight, res2.bias, res3.weight" in caplog.text  # not in the file


# ----------------------------------------------------------------------------- SwinTransformer


@pytest.fixture(scope="module")
def timm_swin():
    """A timm 1.0 Swin of SWIN's size with random weights (classifier and final norm included),
    for 448 x 448 images: every stage map is then larger than the window, where timm shifts the
    windows as mmseg (on a map of one window timm drops the shift, mmseg and ours keep it)."""
    model = timm.create_model("swin_tiny_patch4_window7_224", img_size=448, **SWIN).eval()
    model.load_state_dict(_random(model.state_dict()))
    return model


def _to_microsoft(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original release: merging at the end of stage i - 1, ``head``, stored buffers."""
    out = {}
    for key, value in state.items():
        key = re.sub(
            r"^layers\.(\d)\.downsample\.", lambda m: f"layers.{int(m[1]) - 1}.downsample.", key
        )
        out[key.replace("head.fc.", "head.")] = value
    for i, depth in enumerate(SWIN["depths"]):
        for j in range(depth):
            out[f"layers.{i}.blocks.{j}.attn.relative_position_index"] = torch.zeros(49, 49).long()
            if j % 2:
                out[f"layers.{i}.blocks.{j}.attn_mask"] = torch.zeros(4, 49, 49)
    return out


_UNFOLD_POSITION = [0, 2, 1, 3]  # our 2x2 block b = (row, col) (0,0), (1,0), (0,1), (1,1)


def _unfold_order(t: torch.Tensor) -> torch.Tensor:
    """(..., 4C) block-major (b * C + c) -> nn.Unfold's order (c * 4 + kernel row * 2 + col)."""
    C = t.shape[-1] // 4
    out = torch.empty_like(t)
    for b, p in enumerate(_UNFOLD_POSITION):
        out[..., p::4] = t[..., b * C : (b + 1) * C]
    return out


def _to_mmseg(key: str, value: torch.Tensor) -> tuple[str, torch.Tensor]:
    m = re.match(r"layers\.(\d)\.downsample\.(norm|reduction)\.(\w+)", key)
    if m:
        return f"stages.{int(m[1]) - 1}.downsample.{m[2]}.{m[3]}", _unfold_order(value)
    key = key.replace("patch_embed.proj.", "patch_embed.projection.")
    key = re.sub(r"^layers\.", "stages.", key)
    key = key.replace(".attn.", ".attn.w_msa.")
    key = key.replace(".mlp.fc1.", ".ffn.layers.0.0.").replace(".mlp.fc2.", ".ffn.layers.1.")
    key = re.sub(r"^norms\.res(\d)\.", lambda m: f"norm{int(m[1]) - 2}.", key)
    return key, value


def _swin_outputs(backbone: SwinTransformer, timm_model, x: torch.Tensor) -> float:
    """max |ours - timm| over res2..res5, timm's stage outputs through our output norms."""
    with torch.no_grad():
        ours = backbone.eval()(x)
        theirs = timm_model.forward_intermediates(x, intermediates_only=True, norm=False)
    diffs = []
    for (name, out), ref in zip(ours.items(), theirs):
        norm = backbone.norms[name]
        ref = F.layer_norm(ref.permute(0, 2, 3, 1), norm.normalized_shape, norm.weight, norm.bias)
        diffs.append((out - ref.permute(0, 3, 1, 2)).abs().max().item())
    return max(diffs)


@pytest.mark.parametrize("layout", ["timm", "microsoft", "ours"])
def test_swin_from_timm_and_microsoft_checkpoints(layout, timm_swin, tmp_path, caplog):
    state = timm_swin.state_dict()
    path = tmp_path / "swin.pth"
    torch.save({"model": _to_microsoft(state)} if layout == "microsoft" else state, path)
    if layout == "ours":
        assert _tool_main(["--from", "timm", str(path), str(tmp_path / "swin_T.pth")]) == 0
        path = tmp_path / "swin_T.pth"
    backbone = SwinTransformer(**SWIN, drop_path_rate=0.0)
    with caplog.at_level(logging.INFO, logger="uper_parsing"):
        load_backbone_weights(backbone, str(path))
    features = {k: v for k, v in state.items() if not k.startswith(("head.", "norm."))}
    own = backbone.state_dict()
    assert all(torch.equal(own[k], v) for k, v in features.items())
    assert "norms: 8 missing" in caplog.text  # ImageNet files have no per-output norms
    x = torch.randn(1, 3, 448, 448, generator=torch.Generator().manual_seed(1))
    assert _swin_outputs(backbone, timm_swin, x) < 1e-4  # measured 2.5e-6 (activations ~1e3)


def test_swin_from_mmseg_imagenet_weights(tmp_path, caplog):
    ours = _random(SwinTransformer(**SWIN).state_dict())
    mmseg = dict(_to_mmseg(k, v) for k, v in ours.items())
    torch.save(mmseg, tmp_path / "swin_tiny_patch4_window7_224_20220317-1cdeb081.pth")
    backbone = SwinTransformer(**SWIN)
    with caplog.at_level(logging.INFO, logger="uper_parsing"):
        load_backbone_weights(
            backbone, str(tmp_path / "swin_tiny_patch4_window7_224_20220317-1cdeb081.pth")
        )
    _assert_loaded(backbone, ours, caplog)
