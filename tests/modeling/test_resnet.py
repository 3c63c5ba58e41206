import logging
import math

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from uper_parsing.config import get_cfg
from uper_parsing.layers import ShapeSpec
from uper_parsing.modeling import ResNet, build_backbone

H, W = 45, 61


def _check_output_shape(backbone, height=H, width=W):
    backbone.eval()
    with torch.no_grad():
        outputs = backbone(torch.randn(1, 3, height, width))
    shapes = backbone.output_shape()
    assert list(outputs) == list(shapes)
    for name, out in outputs.items():
        stride = shapes[name].stride
        expected = (1, shapes[name].channels, math.ceil(height / stride), math.ceil(width / stride))
        assert tuple(out.shape) == expected, name
    return outputs


@pytest.mark.parametrize(
    "depth, output_stride, stem_type",
    [
        (18, 32, "basic"),
        (18, 16, "basic"),
        (18, 8, "basic"),
        (18, 8, "deep"),
        (50, 32, "basic"),
        (50, 16, "deep"),
        (50, 8, "basic"),
        (18, 8, "deep_base"),
        (50, 32, "deep_base"),
    ],
)
def test_output_shape_matches_outputs(depth, output_stride, stem_type):
    backbone = ResNet(depth=depth, output_stride=output_stride, stem_type=stem_type)
    _check_output_shape(backbone)
    strides = [s.stride for s in backbone.output_shape().values()]
    assert strides == [4, 8, min(16, output_stride), output_stride]
    expansion = 1 if depth == 18 else 4
    assert [s.channels for s in backbone.output_shape().values()] == [
        64 * expansion * 2**i for i in range(4)
    ]


@pytest.mark.parametrize("depth, output_stride", [(18, 16), (18, 8), (50, 8)])
def test_dilation_is_the_atrous_equivalent_of_stride(depth, output_stride):
    """Replacing a stride by dilation keeps every feature: the dilated map sampled every
    (stride ratio) pixels equals the strided map, borders included (zero padding is exact)."""
    torch.manual_seed(0)
    strided = ResNet(depth=depth).eval()
    dilated = ResNet(depth=depth, output_stride=output_stride).eval()
    dilated.load_state_dict(strided.state_dict())
    x = torch.randn(1, 3, 51, 37)
    with torch.no_grad():
        reference, outputs = strided(x), dilated(x)
    for name in ("res4", "res5"):
        step = strided.output_shape()[name].stride // dilated.output_shape()[name].stride
        ref = reference[name]
        atol = 1e-5 * ref.abs().max().item()  # float sums over 50 layers in another order
        torch.testing.assert_close(outputs[name][..., ::step, ::step], ref, rtol=1e-4, atol=atol)


def test_basic_block_dilation_paddings():
    backbone = ResNet(depth=18, output_stride=8)
    convs = {n: m for n, m in backbone.named_modules() if isinstance(m, nn.Conv2d)}
    expected = {"res4.0.conv1": 1, "res4.0.conv2": 2, "res4.1.conv1": 2, "res5.0.conv1": 2}
    expected.update({"res5.0.conv2": 4, "res5.1.conv2": 4})
    for name, dilation in expected.items():
        conv = convs[name]
        assert conv.stride == (1, 1) and conv.dilation == (dilation,) * 2
        assert conv.padding == (dilation,) * 2, name
    assert convs["res4.0.downsample.0"].stride == (1, 1)


def test_out_features_subset_drops_later_stages():
    backbone = ResNet(depth=18, out_features=["res3"])
    assert not hasattr(backbone, "res4") and not hasattr(backbone, "res5")
    outputs = _check_output_shape(backbone)
    assert list(outputs) == ["res3"]


def test_deep_stem_layout():
    stem = ResNet(depth=18, stem_type="deep").stem
    convs = [m for m in stem if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (3, 32, (3, 3), (2, 2)),
        (32, 32, (3, 3), (1, 1)),
        (32, 64, (3, 3), (1, 1)),
    ]


@pytest.mark.parametrize("depth", [18, 50])
def test_deep_base_stem_layout(depth):
    """CSAIL's deep-base stem (64-64-128): res2's first block and its (new for BasicBlock)
    projection shortcut read 128 channels; the rest of res2 keeps its widths."""
    backbone = ResNet(depth=depth, stem_type="deep_base", norm="BN")
    convs = [m for m in backbone.stem if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (3, 64, (3, 3), (2, 2)),
        (64, 64, (3, 3), (1, 1)),
        (64, 128, (3, 3), (1, 1)),
    ]
    first = backbone.res2[0]
    out_channels = backbone.output_shape()["res2"].channels
    assert first.conv1.in_channels == 128 and first.conv1.out_channels == 64
    projection, norm = first.downsample
    assert (projection.in_channels, projection.out_channels) == (128, out_channels)
    assert projection.kernel_size == (1, 1) and projection.stride == (1, 1)
    assert isinstance(norm, nn.BatchNorm2d) and norm.num_features == out_channels
    assert backbone.res2[1].conv1.in_channels == out_channels


def test_deep_base_from_cfg_and_deep_unchanged():
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.STEM_TYPE", "deep_base"])
    backbone = build_backbone(cfg)
    assert backbone.stem.conv3.out_channels == 128 and backbone.res2[0].conv1.in_channels == 128
    deep = ResNet(depth=18, stem_type="deep")
    assert deep.res2[0].conv1.in_channels == 64 and deep.res2[0].downsample is None


def test_gn_norm_and_build_from_cfg():
    cfg = get_cfg()
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.NORM = "GN"
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res4"]
    backbone = build_backbone(cfg)
    assert isinstance(backbone, ResNet)
    assert any(isinstance(m, nn.GroupNorm) for m in backbone.modules())
    assert list(_check_output_shape(backbone)) == ["res2", "res4"]
    single = build_backbone(cfg, ShapeSpec(channels=1))
    assert single.stem.conv1.in_channels == 1


def _frozen(module):
    return all(not p.requires_grad for p in module.parameters())


@pytest.mark.parametrize("freeze_at", [0, 1, 2, 4])
def test_freeze_at(freeze_at):
    torch.manual_seed(0)
    backbone = ResNet(depth=18, norm="BN", freeze_at=freeze_at)
    modules = [backbone.stem, backbone.res2, backbone.res3, backbone.res4, backbone.res5]
    for i, module in enumerate(modules):
        frozen = i < freeze_at
        assert _frozen(module) == frozen
        norms = [m for m in module.modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))]
        assert all(isinstance(m, FrozenBatchNorm2d) == frozen for m in norms)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    backbone.train()
    sum(o.mean() for o in backbone(torch.randn(2, 3, 45, 45)).values()).backward()
    after = backbone.state_dict()
    for name, param in backbone.named_parameters():
        assert (param.grad is None) == (not param.requires_grad), name
    frozen_prefixes = ("stem.", "res2.", "res3.", "res4.", "res5.")[:freeze_at]
    for key, value in before.items():  # frozen statistics do not move, trained BN ones do
        if key.endswith("running_mean"):
            assert torch.equal(after[key], value) == key.startswith(frozen_prefixes), key


@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_stride_in_1x1_moves_the_stride_only(output_stride):
    """MSRA / Caffe2 layout: same outputs, shapes and strides; the stride sits on conv1."""
    torchvision_layout = ResNet(depth=50, output_stride=output_stride)
    msra = ResNet(depth=50, output_stride=output_stride, stride_in_1x1=True)
    assert msra.output_shape() == torchvision_layout.output_shape()
    _check_output_shape(msra)
    strided = {32: ("res3", "res4", "res5"), 16: ("res3", "res4"), 8: ("res3",)}[output_stride]
    for name in ("res2", "res3", "res4", "res5"):
        block, reference = getattr(msra, name)[0], getattr(torchvision_layout, name)[0]
        stride = (2, 2) if name in strided else (1, 1)
        assert (block.conv1.stride, block.conv2.stride) == (stride, (1, 1)), name
        assert (reference.conv1.stride, reference.conv2.stride) == ((1, 1), stride), name
        assert block.conv2.dilation == reference.conv2.dilation, name
        assert block.downsample[0].stride == stride, name


def test_stride_in_1x1_from_cfg_and_only_for_bottleneck():
    """The key sets Bottleneck layouts; a BasicBlock ResNet (no 1x1 conv) rejects it by name."""
    cfg = get_cfg()
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = True
    backbone = build_backbone(cfg)
    assert backbone.res3[0].conv1.stride == (2, 2)
    assert backbone.res3[0].conv2.stride == (1, 1)
    with pytest.raises(ValueError, match="STRIDE_IN_1X1.*depth 18"):
        ResNet(depth=18, stride_in_1x1=True)
    cfg.MODEL.RESNETS.DEPTH = 18  # a base config's MSRA setting, inherited by an R18 config
    with pytest.raises(ValueError, match="STRIDE_IN_1X1"):
        build_backbone(cfg)


@pytest.fixture(scope="module")
def torchvision_weights(tmp_path_factory):
    """A torchvision resnet18 with non-trivial BN statistics, and its state dict saved to a file."""
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None).eval()
    for m in tv.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight)
            nn.init.uniform_(m.bias)
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(tv.state_dict(), path)
    return tv, path


@pytest.mark.parametrize("norm, freeze_at", [("BN", 0), ("FrozenBN", 0), ("BN", 2)])
def test_pretrained_loading_gives_identical_weights(torchvision_weights, norm, freeze_at):
    tv, path = torchvision_weights
    backbone = ResNet(depth=18, norm=norm, freeze_at=freeze_at, pretrained=str(path)).eval()
    ours = backbone.state_dict()
    renames = {"conv1.": "stem.conv1.", "bn1.": "stem.bn1."}
    renames.update({f"layer{i}.": f"res{i + 1}." for i in range(1, 5)})
    compared = 0
    for key, value in tv.state_dict().items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        prefix = next(p for p in renames if key.startswith(p))
        assert torch.equal(ours[renames[prefix] + key[len(prefix) :]], value), key
        compared += 1
    assert compared == len([k for k in ours if not k.endswith("num_batches_tracked")])
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = tv.layer4(
            tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x)))))))
        )
        torch.testing.assert_close(backbone(x)["res5"], expected)


def test_pretrained_deep_stem_logs_mismatches(torchvision_weights, caplog):
    _, path = torchvision_weights
    with caplog.at_level(logging.WARNING, logger="uper_parsing.modeling.backbone.resnet"):
        backbone = ResNet(depth=18, stem_type="deep", pretrained=str(path))
    assert "shape mismatch" in caplog.text and "stem.conv1.weight" in caplog.text
    assert "stem: 10 missing (" in caplog.text and "conv3.weight" in caplog.text
    assert backbone.res2[0].conv1.weight.abs().sum() > 0


def test_pretrained_missing_file_names_it(tmp_path):
    missing = tmp_path / "nowhere" / "r50.pth"
    with pytest.raises(FileNotFoundError, match="nowhere/r50.pth"):
        ResNet(depth=18, pretrained=str(missing))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"depth": 152}, "depth"),
        ({"out_features": ["res6"]}, "out_features"),
        ({"norm": ""}, "needs a norm"),
        ({"output_stride": 4}, "output_stride"),
        ({"stem_type": "wide"}, "stem_type"),
        ({"freeze_at": 6}, "freeze_at"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ResNet(**{"depth": 18, **kwargs})
