import math

import pytest
import torch

from uper_parsing.modeling import FPN, ResNet, build_backbone
from uper_parsing.modeling.backbone import LastLevelMaxPool


@pytest.mark.parametrize("height, width", [(45, 61), (64, 37)])
@pytest.mark.parametrize("top_block", ["maxpool", ""])
def test_fpn_output_shape_matches_outputs(tiny_cfg, height, width, top_block):
    cfg = tiny_cfg("SemSegFPNHead")
    cfg.MODEL.FPN.TOP_BLOCK = top_block
    cfg.MODEL.FPN.NORM = "GN"
    fpn = build_backbone(cfg).eval()
    assert isinstance(fpn, FPN)
    with torch.no_grad():
        outputs = fpn(torch.randn(1, 3, height, width))
    shapes = fpn.output_shape()
    expected_names = ["p2", "p3", "p4", "p5"] + (["p6"] if top_block else [])
    assert list(outputs) == list(shapes) == expected_names
    for name, out in outputs.items():
        stride = shapes[name].stride
        assert stride == 2 ** int(name[1:])
        size = (math.ceil(height / stride), math.ceil(width / stride))
        assert tuple(out.shape) == (1, shapes[name].channels, *size), name
    assert fpn.size_divisibility == 32


def test_fpn_top_down_sums_coarser_levels():
    """p3 receives res5 through the top-down path: changing res5's lateral conv changes p3."""
    torch.manual_seed(0)
    fpn = FPN(ResNet(depth=18), in_features=["res3", "res4", "res5"], out_channels=32).eval()
    assert list(fpn.output_shape()) == ["p3", "p4", "p5"]
    x = torch.randn(1, 3, 45, 45)
    with torch.no_grad():
        before = fpn(x)["p3"]
        fpn.lateral_convs[-1].conv.weight.add_(1.0)
        after = fpn(x)["p3"]
    assert not torch.allclose(before, after)


def test_fpn_rejects_non_doubling_strides():
    with pytest.raises(ValueError, match="doubling"):
        FPN(ResNet(depth=18, output_stride=16), in_features=["res4", "res5"], out_channels=32)
    with pytest.raises(ValueError, match="not backbone outputs"):
        FPN(ResNet(depth=18), in_features=["res6"], top_block=LastLevelMaxPool())
