"""detectron2 / Caffe2 weights -> this project: every source key accounted for, every tensor of
our model filled, class rows in torchvision's order; through the converter, the CLI tool,
MODEL.WEIGHTS (paths and file:// URLs) and MODEL.BACKBONE.PRETRAINED.

The key / shape tables below are written from detectron2's module structure (no detectron2
needed): ``modeling/backbone/resnet.py`` (BasicStem, BottleneckBlock: ``conv{1,2,3}`` and
``shortcut``, each a Conv2d with a ``.norm`` child), ``backbone/fpn.py`` (``fpn_lateral{2..5}``,
``fpn_output{2..5}``), ``proposal_generator/rpn.py`` (StandardRPNHead ``conv``,
``objectness_logits``, ``anchor_deltas``), ``roi_heads/box_head.py`` (``fc1``, ``fc2``),
``roi_heads/fast_rcnn.py`` (``cls_score`` K+1 rows, background last; ``bbox_pred`` 4K rows),
``roi_heads/mask_head.py`` (``mask_fcn{1..4}``, ``deconv``, ``predictor`` K channels),
``meta_arch/semantic_seg.py`` (SemSegFPNHead: ``p2.0``, ``p3.0``, ``p4.{0,2}``, ``p5.{0,2,4}``
convs between Upsample modules, GN ``.norm``, ``predictor``), and
``checkpoint/c2_model_loading.py`` for the Caffe2 names.
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from uper_parsing.checkpoint import Checkpointer
from uper_parsing.checkpoint import paths as checkpoint_paths
from uper_parsing.checkpoint.detectron2 import (
    convert_caffe2_resnet,
    convert_detectron2_file,
    convert_detectron2_state_dict,
    is_detectron2_state_dict,
)
from uper_parsing.config import get_cfg
from uper_parsing.modeling import ResNet, build_model

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "coco_panoptic" / "panoptic_fpn_R50_1x.yaml"
TOOL = ROOT / "tools" / "convert_weights.py"
THINGS, STUFF = 80, 53
_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
_STATS = ("weight", "bias", "running_mean", "running_var")


# ----------------------------------------------------------------------------- detectron2 tables


def d2_resnet_shapes(depth: int = 50, prefix: str = "backbone.bottom_up.") -> dict[str, tuple]:
    """detectron2 ResNet (BasicStem + BottleneckBlocks, FrozenBN) names and shapes."""
    shapes = {f"{prefix}stem.conv1.weight": (64, 3, 7, 7)}
    shapes.update({f"{prefix}stem.conv1.norm.{s}": (64,) for s in _STATS})
    in_channels = 64
    for stage, blocks in zip(range(2, 6), _BLOCKS[depth]):
        mid = 64 * 2 ** (stage - 2)
        out = 4 * mid
        for i in range(blocks):
            block = f"{prefix}res{stage}.{i}."
            convs = {
                "conv1": (mid, in_channels if i == 0 else out, 1, 1),
                "conv2": (mid, mid, 3, 3),
                "conv3": (out, mid, 1, 1),
            }
            if i == 0:
                convs["shortcut"] = (out, in_channels, 1, 1)
            for name, shape in convs.items():
                shapes[block + name + ".weight"] = shape
                shapes.update({f"{block}{name}.norm.{s}": (shape[0],) for s in _STATS})
        in_channels = out
    return shapes


def d2_panoptic_fpn_shapes() -> dict[str, tuple]:
    """detectron2 Panoptic FPN R50 (COCO: 80 things, 53 stuff + "things") names and shapes,
    including the buffers older model-zoo files carry (pixel statistics, cell anchors)."""
    shapes = d2_resnet_shapes(50)
    for level, channels in zip(range(2, 6), (256, 512, 1024, 2048)):
        shapes[f"backbone.fpn_lateral{level}.weight"] = (256, channels, 1, 1)
        shapes[f"backbone.fpn_lateral{level}.bias"] = (256,)
        shapes[f"backbone.fpn_output{level}.weight"] = (256, 256, 3, 3)
        shapes[f"backbone.fpn_output{level}.bias"] = (256,)
    rpn = "proposal_generator.rpn_head."
    for name, rows, k in (("conv", 256, 3), ("objectness_logits", 3, 1), ("anchor_deltas", 12, 1)):
        shapes[f"{rpn}{name}.weight"] = (rows, 256, k, k)
        shapes[f"{rpn}{name}.bias"] = (rows,)
    shapes.update(
        {f"proposal_generator.anchor_generator.cell_anchors.{i}": (3, 4) for i in range(5)}
    )
    for name, rows, cols in (
        ("box_head.fc1", 1024, 256 * 7 * 7),
        ("box_head.fc2", 1024, 1024),
        ("box_predictor.cls_score", THINGS + 1, 1024),
        ("box_predictor.bbox_pred", 4 * THINGS, 1024),
    ):
        shapes[f"roi_heads.{name}.weight"] = (rows, cols)
        shapes[f"roi_heads.{name}.bias"] = (rows,)
    mask = "roi_heads.mask_head."
    for name, shape in [(f"mask_fcn{k}", (256, 256, 3, 3)) for k in range(1, 5)] + [
        ("deconv", (256, 256, 2, 2)),  # ConvTranspose2d: (in, out, k, k)
        ("predictor", (THINGS, 256, 1, 1)),
    ]:
        shapes[f"{mask}{name}.weight"] = shape
        shapes[f"{mask}{name}.bias"] = (shape[1] if name == "deconv" else shape[0],)
    for level, convs in (("p2", 1), ("p3", 1), ("p4", 2), ("p5", 3)):
        for j in range(0, 2 * convs, 2):  # Conv2d at even positions, Upsample between
            shapes[f"sem_seg_head.{level}.{j}.weight"] = (128, 256 if j == 0 else 128, 3, 3)
            shapes[f"sem_seg_head.{level}.{j}.norm.weight"] = (128,)
            shapes[f"sem_seg_head.{level}.{j}.norm.bias"] = (128,)
    shapes["sem_seg_head.predictor.weight"] = (STUFF + 1, 128, 1, 1)
    shapes["sem_seg_head.predictor.bias"] = (STUFF + 1,)
    shapes["pixel_mean"] = shapes["pixel_std"] = (3, 1, 1)
    return shapes


def caffe2_resnet_shapes(depth: int = 50) -> dict[str, tuple]:
    """Caffe2 / Detectron ImageNet ResNet blob names and shapes (folded BN: scale and bias)."""
    shapes = {"conv1_w": (64, 3, 7, 7), "res_conv1_bn_s": (64,), "res_conv1_bn_b": (64,)}
    in_channels = 64
    for stage, blocks in zip(range(2, 6), _BLOCKS[depth]):
        mid = 64 * 2 ** (stage - 2)
        out = 4 * mid
        for i in range(blocks):
            branches = {
                "branch2a": (mid, in_channels if i == 0 else out, 1, 1),
                "branch2b": (mid, mid, 3, 3),
                "branch2c": (out, mid, 1, 1),
            }
            if i == 0:
                branches["branch1"] = (out, in_channels, 1, 1)
            for name, shape in branches.items():
                shapes[f"res{stage}_{i}_{name}_w"] = shape
                shapes[f"res{stage}_{i}_{name}_bn_s"] = (shape[0],)
                shapes[f"res{stage}_{i}_{name}_bn_b"] = (shape[0],)
        in_channels = out
    shapes.update({"fc1000_w": (1000, 2048), "fc1000_b": (1000,)})
    return shapes


def fill(shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
    """Distinct float32 values: tensor i holds 1000 * (i + 1) + (arange % 997), so every value
    names its source tensor and neighbouring rows differ."""
    sizes = [int(np.prod(shape)) for shape in shapes.values()]
    pattern = (np.arange(max(sizes)) % 997).astype(np.float32)
    return {
        key: (pattern[:size] + np.float32(1000 * (i + 1))).reshape(shape)
        for i, ((key, shape), size) in enumerate(zip(shapes.items(), sizes))
    }


def d2_to_ours_resnet(key: str) -> str:
    """The expected ResNet renaming, written out independently of the converter's rules."""
    parts = key.split(".")
    if parts[-2] == "norm":  # <conv>.norm.<stat>
        conv = parts[-3]
        norm = {"conv1": "bn1", "conv2": "bn2", "conv3": "bn3", "shortcut": "downsample.1"}[conv]
        if parts[-4] == "stem":
            norm = "bn1"
        return ".".join(parts[:-3] + [norm, parts[-1]])
    return key.replace("shortcut", "downsample.0")


# ----------------------------------------------------------------------------- fixtures


def panoptic_cfg(**overrides):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIG))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = True
    cfg.merge_from_list([item for pair in overrides.items() for item in pair])
    return cfg


@pytest.fixture(scope="module")
def d2_weights():
    return fill(d2_panoptic_fpn_shapes())


@pytest.fixture(scope="module")
def d2_pkl(d2_weights, tmp_path_factory):
    path = tmp_path_factory.mktemp("d2") / "model_final_panoptic_fpn_R50.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": d2_weights, "__author__": "Detectron2 Model Zoo"}, f, protocol=4)
    return path


@pytest.fixture(scope="module")
def panoptic_model():
    return build_model(panoptic_cfg())


@pytest.fixture(scope="module")
def converted(d2_pkl):
    return convert_detectron2_file(str(d2_pkl))


def assert_is_expected_conversion(ours: dict[str, torch.Tensor], d2: dict[str, np.ndarray]):
    """Spot checks of every component, by value."""

    def src(key):
        return torch.from_numpy(d2[key])

    # class-specific rows: background first, then detectron2's class k at k + 1
    cls = ours["roi_heads.box_predictor.cls_score.weight"]
    assert torch.equal(cls[0], src("roi_heads.box_predictor.cls_score.weight")[THINGS])
    assert torch.equal(cls[1:], src("roi_heads.box_predictor.cls_score.weight")[:THINGS])
    cls_bias = ours["roi_heads.box_predictor.cls_score.bias"]
    assert cls_bias[0] == src("roi_heads.box_predictor.cls_score.bias")[THINGS]
    assert torch.equal(cls_bias[1:], src("roi_heads.box_predictor.cls_score.bias")[:THINGS])
    for name in ("weight", "bias"):
        box = ours[f"roi_heads.box_predictor.bbox_pred.{name}"]
        assert box.shape[0] == 4 * (THINGS + 1)
        assert not box[:4].any()
        assert torch.equal(box[4:], src(f"roi_heads.box_predictor.bbox_pred.{name}"))
        assert torch.equal(
            box[4 * 8 : 4 * 9], src(f"roi_heads.box_predictor.bbox_pred.{name}")[28:32]
        )
        mask = ours[f"roi_heads.mask_predictor.mask_fcn_logits.{name}"]
        assert mask.shape[0] == THINGS + 1 and not mask[0].any()
        assert torch.equal(mask[1:], src(f"roi_heads.mask_head.predictor.{name}"))
    # one tensor of every other kind
    same = {
        "backbone.bottom_up.stem.bn1.running_var": "backbone.bottom_up.stem.conv1.norm.running_var",
        "backbone.bottom_up.res3.0.bn1.weight": "backbone.bottom_up.res3.0.conv1.norm.weight",
        "backbone.bottom_up.res4.5.conv3.weight": "backbone.bottom_up.res4.5.conv3.weight",
        "backbone.bottom_up.res5.0.downsample.0.weight": (
            "backbone.bottom_up.res5.0.shortcut.weight"
        ),
        "backbone.bottom_up.res5.0.downsample.1.running_mean": (
            "backbone.bottom_up.res5.0.shortcut.norm.running_mean"
        ),
        "backbone.lateral_convs.0.conv.weight": "backbone.fpn_lateral2.weight",
        "backbone.output_convs.3.conv.bias": "backbone.fpn_output5.bias",
        "rpn.head.conv.0.0.weight": "proposal_generator.rpn_head.conv.weight",
        "rpn.head.cls_logits.bias": "proposal_generator.rpn_head.objectness_logits.bias",
        "rpn.head.bbox_pred.weight": "proposal_generator.rpn_head.anchor_deltas.weight",
        "roi_heads.box_head.layers.1.weight": "roi_heads.box_head.fc1.weight",
        "roi_heads.box_head.layers.3.bias": "roi_heads.box_head.fc2.bias",
        "roi_heads.mask_head.3.0.weight": "roi_heads.mask_head.mask_fcn4.weight",
        "roi_heads.mask_predictor.conv5_mask.weight": "roi_heads.mask_head.deconv.weight",
        "sem_seg_head.scale_heads.0.0.conv.weight": "sem_seg_head.p2.0.weight",
        "sem_seg_head.scale_heads.2.1.norm.bias": "sem_seg_head.p4.2.norm.bias",
        "sem_seg_head.scale_heads.3.2.conv.weight": "sem_seg_head.p5.4.weight",
        "sem_seg_head.predictor.weight": "sem_seg_head.predictor.weight",
    }
    for our_key, d2_key in same.items():
        assert torch.equal(ours[our_key], src(d2_key)), our_key


# ----------------------------------------------------------------------------- detectron2 models


def test_conversion_accounts_for_every_key_and_fills_every_tensor(
    converted, d2_weights, panoptic_model
):
    ignored = {"pixel_mean", "pixel_std"}
    ignored |= {f"proposal_generator.anchor_generator.cell_anchors.{i}" for i in range(5)}
    assert set(converted.ignored) == ignored
    assert set(converted.renamed) == set(d2_weights) - ignored
    assert len(set(converted.renamed.values())) == len(converted.renamed)  # one-to-one
    assert converted.kind == "model" and converted.author == "Detectron2 Model Zoo"
    own = panoptic_model.state_dict()
    assert set(converted.state_dict) == set(own)
    for key, value in converted.state_dict.items():
        assert value.shape == own[key].shape, key
    for d2_key, our_key in converted.renamed.items():  # the backbone, key by key
        if d2_key.startswith("backbone.bottom_up."):
            assert our_key == d2_to_ours_resnet(d2_key)
            assert torch.equal(converted.state_dict[our_key], torch.from_numpy(d2_weights[d2_key]))
    assert_is_expected_conversion(converted.state_dict, d2_weights)


def test_model_weights_loads_a_detectron2_pkl(d2_pkl, d2_weights, panoptic_model, caplog):
    cfg = panoptic_cfg(**{"MODEL.WEIGHTS": d2_pkl.as_uri()})  # a file:// URL
    with caplog.at_level(logging.INFO, logger="uper_parsing.checkpoint"):
        Checkpointer(panoptic_model).resume_or_load(cfg.MODEL.WEIGHTS, resume=False)
    assert "Every model tensor loaded" in caplog.text
    assert "missing" not in caplog.text and "unexpected" not in caplog.text
    assert_is_expected_conversion(panoptic_model.state_dict(), d2_weights)


@pytest.fixture(scope="module")
def d2_heads_pth(d2_weights, tmp_path_factory):
    """A detectron2 training checkpoint (.pth, tensors) of the heads only (small and fast)."""
    model = {
        k: torch.from_numpy(v)
        for k, v in d2_weights.items()
        if not k.startswith(("backbone.bottom_up.", "roi_heads.box_head.fc1."))
    }
    optimizer = {"state": {0: {"momentum_buffer": torch.zeros(3)}}, "param_groups": []}
    path = tmp_path_factory.mktemp("d2pth") / "model_0089999.pth"
    torch.save({"model": model, "optimizer": optimizer, "iteration": 89999}, path)
    return path


def test_detectron2_pth_is_recognised_and_converted(d2_heads_pth, d2_weights, panoptic_model):
    torch.nn.init.zeros_(panoptic_model.roi_heads.box_predictor.cls_score.weight)
    extra = Checkpointer(panoptic_model).load(str(d2_heads_pth))
    assert "optimizer" not in extra and "iteration" not in extra  # another model's training state
    cls = panoptic_model.roi_heads.box_predictor.cls_score.weight
    source = torch.from_numpy(d2_weights["roi_heads.box_predictor.cls_score.weight"])
    assert torch.equal(cls[0], source[THINGS]) and torch.equal(cls[1:], source[:THINGS])
    fpn = torch.from_numpy(d2_weights["backbone.fpn_output3.weight"])
    assert torch.equal(panoptic_model.backbone.output_convs[1].conv.weight, fpn)


def _load_tool():
    spec = importlib.util.spec_from_file_location("convert_weights", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_convert_weights_tool(d2_pkl, d2_weights, panoptic_model, tmp_path):
    tool = _load_tool()
    out = tmp_path / "converted" / "panoptic_fpn_R50.pth"
    assert tool.main(["--from", "detectron2", str(d2_pkl), str(out)]) == 0
    saved = torch.load(out, weights_only=True)
    assert saved["source"]["kind"] == "model" and saved["source"]["codebase"] == "detectron2"
    assert "pixel_mean" in saved["source"]["ignored"]
    assert_is_expected_conversion(saved["model"], d2_weights)
    # our own file then loads as any checkpoint of this project
    Checkpointer(panoptic_model).load(str(out))
    assert_is_expected_conversion(panoptic_model.state_dict(), d2_weights)


def test_convert_weights_tool_checks_against_a_config(d2_pkl, tmp_path, caplog):
    out = tmp_path / "other.pth"
    check = ["--config-file", str(CONFIG), str(d2_pkl), str(out)]
    with caplog.at_level(logging.ERROR):
        status = _load_tool().main(
            ["--from", "detectron2", *check, "MODEL.ROI_HEADS.NUM_CLASSES", "3"]
        )
    assert status == 1 and not out.exists()
    assert "roi_heads.box_predictor.cls_score.weight: checkpoint (81, 1024) vs model (4, 1024)" in (
        caplog.text
    )


def test_shape_mismatch_raises_unless_partial(d2_pkl, d2_heads_pth, d2_weights):
    model = build_model(panoptic_cfg(**{"MODEL.ROI_HEADS.NUM_CLASSES": 3}))
    before = model.roi_heads.box_predictor.cls_score.weight.clone()
    with pytest.raises(ValueError, match="WEIGHTS_PARTIAL") as error:
        Checkpointer(model).load(str(d2_pkl))
    message = str(error.value)
    assert "roi_heads.box_predictor.cls_score.weight: checkpoint (81, 1024) vs model (4, 1024)" in (
        message
    )
    assert (
        "roi_heads.mask_predictor.mask_fcn_logits.bias: checkpoint (81,) vs model (4,)" in message
    )
    assert "backbone" not in message

    Checkpointer(model, partial=True).load(str(d2_heads_pth))
    assert torch.equal(model.roi_heads.box_predictor.cls_score.weight, before)
    expected = torch.from_numpy(d2_weights["sem_seg_head.predictor.weight"])
    assert torch.equal(model.sem_seg_head.predictor.weight, expected)


def test_unknown_keys_are_errors_that_name_them():
    state = fill({"backbone.bottom_up.stem.conv1.weight": (2,), "roi_heads.keypoint_head.x": (1,)})
    with pytest.raises(ValueError, match="roi_heads.keypoint_head.x"):
        convert_detectron2_state_dict(state)


def test_class_agnostic_heads_are_repeated_per_class():
    shapes = {
        "roi_heads.box_predictor.cls_score.weight": (3, 4),
        "roi_heads.box_predictor.bbox_pred.weight": (4, 4),
        "roi_heads.mask_head.predictor.weight": (1, 4, 1, 1),
    }
    state = fill(shapes)
    ours = convert_detectron2_state_dict(state).state_dict
    box = ours["roi_heads.box_predictor.bbox_pred.weight"]
    assert box.shape == (12, 4) and not box[:4].any()
    assert torch.equal(box[4:8], box[8:12]) and torch.equal(
        box[4:8], torch.from_numpy(state["roi_heads.box_predictor.bbox_pred.weight"])
    )
    mask = ours["roi_heads.mask_predictor.mask_fcn_logits.weight"]
    assert mask.shape == (3, 4, 1, 1) and not mask[0].any() and torch.equal(mask[1], mask[2])


def test_our_own_names_are_not_taken_for_detectron2(panoptic_model):
    assert is_detectron2_state_dict(d2_panoptic_fpn_shapes())
    assert not is_detectron2_state_dict(panoptic_model.state_dict())
    cfg = get_cfg()  # UPerNet
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 32
    cfg.MODEL.AUX_HEAD.ENABLED = True
    cfg.MODEL.AUX_HEAD.CONVS_DIM = 32
    assert not is_detectron2_state_dict(build_model(cfg).state_dict())


def test_pickles_hold_arrays_only_unless_trusted(tmp_path):
    path = tmp_path / "odd.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"w": Counter(a=1)}, "__author__": "?"}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="collections.Counter"):
        convert_detectron2_file(str(path))
    with pytest.raises(ValueError, match="Counter, not an array"):
        convert_detectron2_file(str(path), trusted=True)


def test_detectron2_urls_resolve_to_its_model_zoo(monkeypatch):
    asked = []
    monkeypatch.setattr(
        checkpoint_paths, "cached_download", lambda url, **kw: asked.append(url) or "/x.pkl"
    )
    checkpointer = Checkpointer(torch.nn.Linear(1, 1))
    name = "ImageNetPretrained/MSRA/R-50.pkl"
    assert checkpointer.path_manager.get_local_path("detectron2://" + name) == "/x.pkl"
    assert asked == [checkpoint_paths.DETECTRON2_MODEL_ZOO + name]


# ----------------------------------------------------------------------------- Caffe2 backbones


@pytest.fixture(scope="module")
def c2_blobs():
    blobs = fill(caffe2_resnet_shapes(50))
    blobs["conv1_w_momentum"] = np.zeros((64, 3, 7, 7), np.float32)
    return blobs


def _write_caffe2_pkl(path: Path, blobs: dict[str, np.ndarray], wrapped: bool) -> Path:
    """R-50.pkl as Detectron's ImageNet files (a Python 2 pickle, read as latin-1), or wrapped in
    {"blobs": ...} as its detection models."""
    with open(path, "wb") as f:
        if wrapped:
            pickle.dump({"blobs": blobs}, f, protocol=4)
        else:
            pickle.dump(blobs, f, protocol=2)
    return path


@pytest.fixture(scope="module")
def c2_pkl(c2_blobs, tmp_path_factory):
    return _write_caffe2_pkl(tmp_path_factory.mktemp("c2") / "R-50.pkl", c2_blobs, wrapped=True)


@pytest.mark.parametrize("wrapped", [False, True])
def test_caffe2_resnet50_through_backbone_pretrained(wrapped, c2_blobs, tmp_path, caplog):
    path = _write_caffe2_pkl(tmp_path / "R-50.pkl", c2_blobs, wrapped)
    with caplog.at_level(logging.INFO, logger="uper_parsing"):
        backbone = ResNet(depth=50, stride_in_1x1=True, pretrained=str(path))
    assert "Backbone tensors" not in caplog.text  # nothing missing, unused or mismatched
    assert "3 ignored (conv1_w_momentum, fc1000_b, fc1000_w)" in caplog.text
    own = backbone.state_dict()
    conversion = convert_caffe2_resnet(c2_blobs)
    assert set(conversion.ignored) == {"fc1000_w", "fc1000_b", "conv1_w_momentum"}
    assert set(conversion.renamed) | set(conversion.ignored) == set(c2_blobs)
    assert set(conversion.state_dict) == set(own)

    def c2(name):
        return torch.from_numpy(c2_blobs[name])

    assert torch.equal(own["stem.conv1.weight"], c2("conv1_w"))
    assert torch.equal(own["stem.bn1.weight"], c2("res_conv1_bn_s"))
    assert torch.equal(own["res3.0.conv1.weight"], c2("res3_0_branch2a_w"))
    assert torch.equal(own["res4.5.bn2.bias"], c2("res4_5_branch2b_bn_b"))
    assert torch.equal(own["res5.0.downsample.0.weight"], c2("res5_0_branch1_w"))
    assert torch.equal(own["res5.0.downsample.1.weight"], c2("res5_0_branch1_bn_s"))
    means = [v for k, v in own.items() if k.endswith("running_mean")]
    variances = [v for k, v in own.items() if k.endswith("running_var")]
    assert len(means) == len(variances) == 53  # stem + 16 blocks x 3 + 4 shortcuts
    assert all(not m.any() for m in means) and all(bool((v == 1).all()) for v in variances)


def test_caffe2_resnet50_through_model_weights(c2_pkl, c2_blobs, panoptic_model, caplog):
    with caplog.at_level(logging.INFO, logger="uper_parsing.checkpoint"):
        Checkpointer(panoptic_model).load(str(c2_pkl))
    assert "loading it into backbone.bottom_up" in caplog.text
    assert (
        "sem_seg_head.scale_heads.0.0: 3 missing (conv.weight" in caplog.text
    )  # the heads: reported
    resnet = panoptic_model.backbone.bottom_up
    assert torch.equal(resnet.res2[0].conv3.weight, torch.from_numpy(c2_blobs["res2_0_branch2c_w"]))
    assert not resnet.res2[0].bn3.running_mean.any()


def test_converted_backbone_file_loads_through_pretrained(c2_pkl, c2_blobs, tmp_path):
    out = tmp_path / "R-50.pth"
    assert _load_tool().main(["--from", "detectron2", str(c2_pkl), str(out)]) == 0
    assert torch.load(out, weights_only=True)["source"]["kind"] == "resnet"
    backbone = ResNet(depth=50, stride_in_1x1=True, pretrained=str(out))
    expected = torch.from_numpy(c2_blobs["res4_2_branch2b_w"])
    assert torch.equal(backbone.res4[2].conv2.weight, expected)
    assert not backbone.res4[2].bn2.running_mean.any()


def test_resnet101_names_cover_the_backbone():
    own = ResNet(depth=101, stride_in_1x1=True).state_dict()
    own = {k: v for k, v in own.items() if not k.endswith("num_batches_tracked")}
    blobs = {k: np.zeros(s, np.float32) for k, s in caffe2_resnet_shapes(101).items()}
    d2 = {k: np.zeros(s, np.float32) for k, s in d2_resnet_shapes(101, prefix="").items()}
    for conversion in (convert_caffe2_resnet(blobs), convert_detectron2_state_dict(d2)):
        assert conversion.kind == "resnet"
        assert set(conversion.state_dict) == set(own)
        for key, value in conversion.state_dict.items():
            assert value.shape == own[key].shape, key
