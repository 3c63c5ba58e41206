import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from uper_parsing.layers import (
    ConvNormAct,
    LayerNorm2d,
    convert_frozen_batchnorm,
    get_norm,
    pad_to_multiple,
    pad_to_size,
    resize_to,
    stack_padded,
)


@pytest.mark.parametrize(
    "norm, cls",
    [
        ("BN", nn.BatchNorm2d),
        ("SyncBN", nn.SyncBatchNorm),
        ("FrozenBN", FrozenBatchNorm2d),
        ("LN", LayerNorm2d),
    ],
)
def test_get_norm_types(norm, cls):
    layer = get_norm(norm, 64)
    assert type(layer) is cls and layer.weight.shape == (64,)


def test_get_norm_gn_none_and_errors():
    gn = get_norm("GN", 64)
    assert isinstance(gn, nn.GroupNorm) and gn.num_groups == 32 and gn.num_channels == 64
    assert get_norm("", 64) is None
    with pytest.raises(ValueError, match="Unknown norm 'IN'"):
        get_norm("IN", 64)
    with pytest.raises(ValueError, match="divisible by 32"):
        get_norm("GN", 48)


@pytest.mark.parametrize("norm", ["", "BN", "GN"])
def test_conv_norm_act_bias_and_same_size(norm):
    block = ConvNormAct(8, 32, 3, dilation=2, norm=norm)
    assert (block.conv.bias is None) == (norm != "")
    out = block(torch.randn(2, 8, 45, 37))
    assert out.shape == (2, 32, 45, 37) and out.min() >= 0
    assert ConvNormAct(8, 32, 3, stride=2, activation=False)(torch.randn(1, 8, 45, 37)).min() < 0


def test_resize_to_is_bilinear_without_corner_alignment():
    x = torch.randn(2, 3, 7, 9)
    expected = F.interpolate(x, size=(13, 4), mode="bilinear", align_corners=False)
    torch.testing.assert_close(resize_to(x, (13, 4)), expected)
    assert resize_to(x, torch.Size([7, 9])) is x


def test_padding_helpers():
    x = torch.ones(3, 45, 37)
    padded = pad_to_multiple(x, 32, value=-1.0)
    assert padded.shape == (3, 64, 64)
    assert padded[:, :45, :37].eq(1).all() and padded[:, 45:].eq(-1).all()
    assert padded[:, :, 37:].eq(-1).all()
    assert pad_to_multiple(x, 0) is x
    assert pad_to_size(x, (50, 40)).shape == (3, 50, 40)
    with pytest.raises(ValueError, match="smaller"):
        pad_to_size(x, (40, 40))
    labels = stack_padded(
        [torch.zeros(5, 7, dtype=torch.long), torch.ones(9, 3, dtype=torch.long)],
        size_divisibility=4,
        value=255,
    )
    assert labels.shape == (2, 12, 8) and labels.dtype == torch.long
    assert labels[0, :5, :7].eq(0).all() and labels[0, 5:].eq(255).all()
    assert labels[1, :9, :3].eq(1).all() and labels[1, :, 3:].eq(255).all()


def test_convert_frozen_batchnorm_keeps_eval_output():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Sequential(nn.BatchNorm2d(8)))
    net.train()(torch.randn(4, 3, 9, 9))  # move the running statistics
    net.eval()
    x = torch.randn(2, 3, 9, 9)
    expected = net(x)
    frozen = convert_frozen_batchnorm(net)
    assert isinstance(frozen[1], FrozenBatchNorm2d) and isinstance(frozen[2][0], FrozenBatchNorm2d)
    torch.testing.assert_close(frozen(x), expected)
    assert isinstance(convert_frozen_batchnorm(nn.BatchNorm2d(4)), FrozenBatchNorm2d)
