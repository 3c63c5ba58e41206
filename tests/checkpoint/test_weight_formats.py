"""One loader for every format: reading (.pth / .bin / .safetensors / .pkl), "auto" detection of
each format, MODEL.WEIGHTS_FORMAT given explicitly, errors for unknown and ambiguous files, the
"source" record of tools/convert_weights.py, and whole models of transformers' UperNet and CSAIL
through MODEL.WEIGHTS and the tool.

The foreign names are written here from each codebase's module structure, independently of the
converters: transformers' ``modeling_upernet.py`` / ``modeling_resnet.py`` (``embedder``,
``encoder.stages.{i}.layers.{j}.layer.{k}.convolution / normalization``, ``shortcut``,
``decode_head.psp_modules``, ``batch_norm``, ``classifier``), CSAIL's ``mit_semseg/models``
(``conv1..3`` / ``bn1..3`` deep-base stem, ``layer1..4``; UPerNet ``ppm_conv``, ``ppm_last_conv``,
``fpn_in``, ``fpn_out.{i}.0``, ``conv_last.0`` / ``conv_last.1``).
"""

from __future__ import annotations

import json
import logging
import pickle
import re

import numpy as np
import pytest
import torch
import torchvision
from _tools import load_tool
from safetensors.torch import save_file

from uper_parsing.checkpoint import (
    Checkpointer,
    choose_weights_format,
    convert_weights_file,
    read_weights_file,
)
from uper_parsing.config import get_cfg
from uper_parsing.engine.predictor import DefaultPredictor
from uper_parsing.modeling import ResNet, build_model
from uper_parsing.modeling.backbone.timm_backbone import TimmBackbone


def _tool():
    return load_tool("convert_weights")


def _zeros(keys: list[str]) -> dict[str, torch.Tensor]:
    return {k: torch.zeros(1) for k in keys}


def upernet_cfg(*overrides):
    """A small UPerNet R18 (BN) with an auxiliary head: 5 classes, 16 / 8 channels."""
    cfg = get_cfg()
    cfg.merge_from_list(
        [
            "MODEL.DEVICE", "cpu",
            "MODEL.RESNETS.DEPTH", 18,
            "MODEL.RESNETS.NORM", "BN",
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 5,
            "MODEL.SEM_SEG_HEAD.CONVS_DIM", 16,
            "MODEL.AUX_HEAD.ENABLED", True,
            "MODEL.AUX_HEAD.CONVS_DIM", 8,
            *overrides,
        ]
    )  # fmt: skip
    return cfg


@pytest.fixture(scope="module")
def tv_resnet18(tmp_path_factory):
    """(path, state) of a torchvision ResNet-18 state dict written with torch.save."""
    state = torchvision.models.resnet18().state_dict()
    path = tmp_path_factory.mktemp("tv") / "resnet18.pth"
    torch.save(state, path)
    return path, state


# ----------------------------------------------------------------------------- detection

# Representative keys of each source (a few per layout); each must be recognised by "auto"
_SOURCES = {
    "timm ConvNeXt": (
        "timm", ["stem.0.weight", "stages.0.blocks.0.conv_dw.weight", "head.fc.bias"]
    ),
    "FB ConvNeXt": (
        "timm",
        ["downsample_layers.0.0.weight", "stages.0.0.dwconv.weight", "stages.0.0.pwconv1.weight",
         "norm.weight", "head.weight"],
    ),
    "timm Swin": (
        "timm",
        ["patch_embed.proj.weight", "layers.0.blocks.0.attn.qkv.weight",
         "layers.1.downsample.reduction.weight", "norm.weight", "head.fc.weight"],
    ),
    "Microsoft Swin": (
        "timm",
        ["patch_embed.proj.weight", "layers.0.blocks.1.attn.qkv.weight",
         "layers.0.blocks.1.attn_mask", "layers.0.blocks.0.attn.relative_position_index",
         "layers.0.downsample.reduction.weight", "head.weight"],
    ),
    "mmseg segmentor": (
        "mmseg",
        ["backbone.stem.0.weight", "backbone.stem.1.running_mean", "backbone.layer1.0.conv1.weight",
         "decode_head.conv_seg.weight"],
    ),
    "mmcv ResNetV1c": ("mmseg", ["stem.0.weight", "stem.1.running_mean", "layer1.0.conv1.weight"]),
    "mmseg Swin": (
        "mmseg",
        ["backbone.patch_embed.projection.weight",
         "backbone.stages.0.blocks.0.attn.w_msa.qkv.weight"],
    ),
    "transformers UperNet": (
        "hf-upernet",
        ["backbone.embedder.embedder.convolution.weight", "decode_head.classifier.weight",
         "decode_head.bottleneck.batch_norm.weight"],
    ),
    "CSAIL encoder": (
        "csail",
        ["conv1.weight", "bn1.weight", "conv2.weight", "conv3.weight", "layer1.0.conv1.weight"],
    ),
    "CSAIL decoder": ("csail", ["ppm_conv.0.0.weight", "fpn_in.0.0.weight", "conv_last.1.weight"]),
    "torchvision ResNet": (
        "torchvision", ["conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "fc.weight"]
    ),
    "detectron2 model": (
        "detectron2",
        ["backbone.bottom_up.stem.conv1.weight", "backbone.bottom_up.stem.conv1.norm.weight",
         "backbone.fpn_lateral2.weight", "sem_seg_head.p2.0.weight"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("source", sorted(_SOURCES))
@pytest.mark.parametrize("extension", [".pth", ".safetensors"])
def test_auto_detection_recognises_each_source(source, extension, tmp_path):
    expected, keys = _SOURCES[source]
    path = tmp_path / f"weights{extension}"
    if extension == ".safetensors":
        save_file(_zeros(keys), str(path))
    else:
        torch.save({"state_dict": _zeros(keys), "meta": {"epoch": 3}}, path)  # mmcv's wrapper
    file = read_weights_file(str(path))
    assert sorted(file.state) == sorted(keys)
    assert choose_weights_format(file) == expected
    conversion = convert_weights_file(file, expected)  # every key renamed or dropped on purpose
    assert conversion.state_dict and len(conversion.renamed) + len(conversion.ignored) == len(keys)


def test_detectron2_and_caffe2_pickles_are_detectron2(tmp_path):
    d2 = tmp_path / "model_final.pkl"
    arrays = {"backbone.bottom_up.stem.conv1.norm.weight": np.zeros(1, np.float32)}
    with open(d2, "wb") as f:
        pickle.dump({"model": arrays, "__author__": "Detectron2 Model Zoo"}, f)
    c2 = tmp_path / "R-50.pkl"
    with open(c2, "wb") as f:
        pickle.dump({"conv1_w": np.zeros(1, np.float32), "res_conv1_bn_s": np.ones(1)}, f)
    for path, naming in ((d2, "detectron2"), (c2, "caffe2")):
        file = read_weights_file(str(path))
        assert choose_weights_format(file) == "detectron2"
        assert convert_weights_file(file, "detectron2").source_format == naming


def test_our_checkpoints_and_tool_outputs_are_ours(tv_resnet18, tmp_path, caplog):
    path, state = tv_resnet18
    for output in ("r18.pth", "r18.safetensors"):
        out = tmp_path / output
        assert _tool().main(["--from", "torchvision", str(path), str(out)]) == 0
        file = read_weights_file(str(out))
        assert file.source["codebase"] == "torchvision" and file.source["kind"] == "resnet"
        assert choose_weights_format(file) == "ours"  # its record, not its keys
        model = build_model(upernet_cfg())
        with caplog.at_level(logging.INFO, logger="uper_parsing.checkpoint"):
            Checkpointer(model).load(str(out))
        assert "loading it into backbone" in caplog.text
        assert torch.equal(
            model.backbone.res3[0].downsample[0].weight, state["layer2.0.downsample.0.weight"]
        )

    saver = Checkpointer(ResNet(depth=18, norm="BN"), str(tmp_path / "run"))
    saver.save("model_final", iteration=9)
    own = read_weights_file(str(tmp_path / "run" / "model_final.pth"))
    assert choose_weights_format(own, target_keys=saver.model.state_dict()) == "ours"
    assert own.extra == {"iteration": 9}


# ----------------------------------------------------------------------------- MODEL.WEIGHTS_FORMAT


def test_explicit_format_is_used_as_given(tv_resnet18):
    """A timm ResNet has torchvision's names: "auto" reads torchvision, "timm" places it in a
    TimmBackbone."""
    path, state = tv_resnet18
    assert choose_weights_format(read_weights_file(str(path))) == "torchvision"
    backbone = TimmBackbone(name="resnet18", out_indices=(1, 2, 3, 4))
    Checkpointer(backbone, weights_format="timm").load(str(path))
    assert torch.equal(
        backbone.model.layer4[1].bn2.running_mean, state["layer4.1.bn2.running_mean"]
    )


def test_unknown_and_ambiguous_files_are_errors_naming_file_and_key(tmp_path):
    unknown = tmp_path / "unknown.pth"
    torch.save(_zeros(["encoder.blocks.0.weight", "decoder.fc.weight"]), unknown)
    with pytest.raises(ValueError) as error:
        Checkpointer(torch.nn.Linear(2, 2)).load(str(unknown))
    assert str(unknown) in str(error.value) and "MODEL.WEIGHTS_FORMAT" in str(error.value)
    assert "no weights format" in str(error.value)

    both = tmp_path / "both.safetensors"  # mmseg's and transformers' heads in one file
    keys = ["backbone.stem.1.running_mean", "decode_head.conv_seg.weight"]
    save_file(_zeros([*keys, "decode_head.classifier.weight"]), str(both))
    with pytest.raises(ValueError) as error:
        Checkpointer(torch.nn.Linear(2, 2)).load(str(both))
    message = str(error.value)
    assert str(both) in message and "MODEL.WEIGHTS_FORMAT" in message
    assert "several formats (mmseg, hf-upernet)" in message

    with pytest.raises(ValueError, match="MODEL.WEIGHTS_FORMAT='mmsegmentation' is not"):
        Checkpointer(torch.nn.Linear(2, 2), weights_format="mmsegmentation").load(str(both))


def test_resuming_reads_our_files_whatever_the_format(tmp_path):
    model = ResNet(depth=18, norm="BN")
    Checkpointer(model, str(tmp_path)).save("model_0000009", iteration=9)
    resumed = Checkpointer(ResNet(depth=18, norm="BN"), str(tmp_path), weights_format="mmseg")
    assert resumed.resume_or_load("unused.pth", resume=True) == {"iteration": 9}
    assert torch.equal(resumed.model.res5[0].conv1.weight, model.res5[0].conv1.weight)


def test_config_weights_format_reaches_the_predictor(tv_resnet18):
    path, state = tv_resnet18
    with pytest.raises(ValueError, match="mmseg"):  # the mmseg converter was asked
        DefaultPredictor(upernet_cfg("MODEL.WEIGHTS", str(path), "MODEL.WEIGHTS_FORMAT", "mmseg"))
    loaded = ("MODEL.WEIGHTS", str(path), "MODEL.WEIGHTS_FORMAT", "torchvision")
    # unfolded, so that the loaded conv weights are those of the file
    predictor = DefaultPredictor(upernet_cfg(*loaded, "TEST.FOLD_BATCH_NORM", "never"))
    assert torch.equal(predictor.model.backbone.stem.conv1.weight, state["conv1.weight"])


# ----------------------------------------------------------------------------- whole models


def _to_hf(key: str) -> str:
    """Our UPerNet R18 name -> transformers' UperNetForSemanticSegmentation (ResNet backbone)."""
    key = re.sub(r"^backbone\.stem\.conv1\.", "backbone.embedder.embedder.convolution.", key)
    key = re.sub(r"^backbone\.stem\.bn1\.", "backbone.embedder.embedder.normalization.", key)
    m = re.match(r"backbone\.res(\d)\.(\d+)\.(.+)", key)
    if m:
        stage, block, rest = int(m[1]) - 2, m[2], m[3]
        rest = re.sub(r"^conv(\d)\.", lambda c: f"layer.{int(c[1]) - 1}.convolution.", rest)
        rest = re.sub(r"^bn(\d)\.", lambda c: f"layer.{int(c[1]) - 1}.normalization.", rest)
        rest = rest.replace("downsample.0.", "shortcut.convolution.")
        rest = rest.replace("downsample.1.", "shortcut.normalization.")
        return f"backbone.encoder.stages.{stage}.layers.{block}.{rest}"
    key = key.replace("sem_seg_head.ppm.branches.", "decode_head.psp_modules.")
    key = key.replace("sem_seg_head.predictor.", "decode_head.classifier.")
    key = key.replace("sem_seg_head.", "decode_head.")
    key = key.replace("aux_head.predictor.", "auxiliary_head.classifier.")
    key = key.replace("aux_head.", "auxiliary_head.")
    return key.replace(".norm.", ".batch_norm.")


_HF_CONFIG = {
    "model_type": "upernet",
    "hidden_size": 16,
    "pool_scales": [1, 2, 3, 6],
    "use_auxiliary_head": True,
    "auxiliary_in_channels": 256,
    "auxiliary_channels": 8,
    "auxiliary_num_convs": 1,
    "auxiliary_concat_input": False,
    "loss_ignore_index": 255,
    "num_labels": 5,
    "backbone_config": {
        "model_type": "resnet",
        "embedding_size": 64,
        "hidden_sizes": [64, 128, 256, 512],
        "depths": [2, 2, 2, 2],
        "layer_type": "basic",
        "hidden_act": "relu",
        "downsample_in_first_stage": False,
        "downsample_in_bottleneck": False,
        "out_features": ["stage1", "stage2", "stage3", "stage4"],
    },
}


def test_transformers_upernet_folder_through_the_tool_and_model_weights(tmp_path, caplog):
    from uper_parsing.checkpoint.hf_upernet import config_overrides_from_hf

    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *config_overrides_from_hf(_HF_CONFIG)])
    original = {
        k: torch.randn(v.shape) if v.is_floating_point() else v
        for k, v in build_model(cfg).state_dict().items()
    }
    folder = tmp_path / "upernet-resnet18"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(_HF_CONFIG))
    save_file({_to_hf(k): v for k, v in original.items()}, str(folder / "model.safetensors"))

    model = build_model(cfg)
    with caplog.at_level(logging.INFO, logger="uper_parsing.checkpoint"):
        Checkpointer(model).load(str(folder / "model.safetensors"))  # auto: hf-upernet
    assert "Every model tensor loaded" in caplog.text
    for key, value in model.state_dict().items():
        assert torch.equal(value, original[key]), key

    out = tmp_path / "upernet_R18.pth"
    with caplog.at_level(logging.INFO):
        assert _tool().main(["--from", "hf-upernet", str(folder), str(out)]) == 0
    assert "Every tensor of the model of its config.json is filled" in caplog.text
    converted = torch.load(out, weights_only=True)["model"]
    assert all(torch.equal(converted[k], v) for k, v in original.items() if "num_batches" not in k)

    (folder / "config.json").write_text(json.dumps({**_HF_CONFIG, "num_labels": 6}))
    with caplog.at_level(logging.ERROR):
        assert _tool().main(["--from", "hf-upernet", str(folder), str(tmp_path / "x.pth")]) == 1
    assert (
        "sem_seg_head.predictor.weight: checkpoint (5, 16, 1, 1) vs model (6, 16, 1, 1)"
        in caplog.text
    )


def _to_csail(key: str) -> tuple[str, str]:
    """Our UPerNet name -> (CSAIL part, CSAIL name): deep-base encoder, UPerNet decoder."""
    if key.startswith("backbone."):
        key = key[len("backbone.") :]
        key = re.sub(r"^stem\.", "", key)
        return "encoder", re.sub(r"^res(\d)\.", lambda m: f"layer{int(m[1]) - 1}.", key)
    head = key[len("sem_seg_head.") :]
    targets = [
        (r"ppm\.branches\.(\d+)\.1\.(conv|norm)\.", lambda m: f"ppm_conv.{m[1]}.{_cn(m[2])}."),
        (r"bottleneck\.(conv|norm)\.", lambda m: f"ppm_last_conv.{_cn(m[1])}."),
        (r"lateral_convs\.(\d+)\.(conv|norm)\.", lambda m: f"fpn_in.{m[1]}.{_cn(m[2])}."),
        (r"fpn_convs\.(\d+)\.(conv|norm)\.", lambda m: f"fpn_out.{m[1]}.0.{_cn(m[2])}."),
        (r"fpn_bottleneck\.(conv|norm)\.", lambda m: f"conv_last.0.{_cn(m[1])}."),
        (r"predictor\.", lambda m: "conv_last.1."),
    ]
    for pattern, target in targets:
        if re.match(pattern, head):
            return "decoder", re.sub("^" + pattern, target, head)
    raise AssertionError(f"no CSAIL name for {key}")


def _cn(layer: str) -> str:
    return "0" if layer == "conv" else "1"


def test_csail_encoder_and_decoder_through_the_tool(tmp_path):
    cfg = upernet_cfg("MODEL.RESNETS.STEM_TYPE", "deep_base", "MODEL.AUX_HEAD.ENABLED", False)
    original = {
        k: torch.randn(v.shape)
        for k, v in build_model(cfg).state_dict().items()
        if "num_batches" not in k
    }
    parts: dict[str, dict[str, torch.Tensor]] = {"encoder": {}, "decoder": {}}
    for key, value in original.items():
        part, name = _to_csail(key)
        parts[part][name] = value
    for part, state in parts.items():
        torch.save(state, tmp_path / f"{part}_epoch_30.pth")
    out = tmp_path / "upernet_csail.safetensors"
    args = ["--from", "csail", str(tmp_path / "encoder_epoch_30.pth")]
    assert _tool().main([*args, "--decoder", str(tmp_path / "decoder_epoch_30.pth"), str(out)]) == 0
    file = read_weights_file(str(out))
    assert file.source["file"] == "encoder_epoch_30.pth, decoder_epoch_30.pth"
    assert file.state.keys() == original.keys()
    assert all(torch.equal(file.state[k], v) for k, v in original.items())

    model = build_model(cfg)  # the encoder alone through MODEL.WEIGHTS (auto: csail)
    Checkpointer(model).load(str(tmp_path / "encoder_epoch_30.pth"))
    assert torch.equal(model.backbone.stem.conv3.weight, original["backbone.stem.conv3.weight"])
