import math

import pytest
import torch

from uper_parsing.layers import ShapeSpec
from uper_parsing.modeling import (
    FCNHead,
    PSPHead,
    SemSegFPNHead,
    UPerNetHead,
    build_aux_head,
    build_sem_seg_head,
)

K = 5
# Deliberately not ResNet's channels: heads must read them from the ShapeSpecs
RES_SHAPES = {
    "res2": ShapeSpec(channels=24, stride=4),
    "res3": ShapeSpec(channels=40, stride=8),
    "res4": ShapeSpec(channels=72, stride=16),
    "res5": ShapeSpec(channels=96, stride=32),
}
FPN_SHAPES = {f"p{k}": ShapeSpec(channels=32, stride=2**k) for k in range(2, 7)}


def _features(shapes, height, width, batch=2):
    return {
        name: torch.randn(
            batch, s.channels, math.ceil(height / s.stride), math.ceil(width / s.stride)
        )
        for name, s in shapes.items()
    }


def _size(height, width, stride):
    return math.ceil(height / stride), math.ceil(width / stride)


HEADS = [
    (UPerNetHead, RES_SHAPES, 4, {"norm": "BN"}),
    (PSPHead, {"res5": RES_SHAPES["res5"]}, 32, {"pool_scales": (1, 2, 3, 6)}),
    (FCNHead, {"res4": RES_SHAPES["res4"]}, 16, {"num_convs": 2}),
    (SemSegFPNHead, {k: v for k, v in FPN_SHAPES.items() if k != "p6"}, 4, {"norm": "GN"}),
]


@pytest.mark.parametrize("head_cls, shapes, stride, kwargs", HEADS)
@pytest.mark.parametrize("height, width", [(45, 45), (61, 37)])
def test_head_on_odd_sizes(head_cls, shapes, stride, kwargs, height, width):
    torch.manual_seed(0)
    head = head_cls(shapes, num_classes=K, convs_dim=32, dropout=0.1, **kwargs)
    features = _features(shapes, height, width)
    head.eval()
    logits, losses = head(features)
    assert logits.shape == (2, K, *_size(height, width, stride)) and losses == {}
    head.train()
    targets = torch.randint(0, K, (2, height, width))
    none, losses = head(features, targets)
    assert none is None and list(losses) == ["loss_sem_seg"]
    assert losses["loss_sem_seg"].ndim == 0 and torch.isfinite(losses["loss_sem_seg"])
    with pytest.raises(ValueError, match="needs targets"):
        head(features)


def test_upernet_forward_features():
    head = UPerNetHead(RES_SHAPES, num_classes=K, convs_dim=32).eval()
    out = head.forward_features(_features(RES_SHAPES, 61, 37))
    assert out["ppm"].shape == (2, 32, *_size(61, 37, 32))
    assert out["fused"].shape == (2, 32, *_size(61, 37, 4))
    assert head.ppm.out_channels == 96 + 4 * 32


def test_semseg_fpn_head_structure_and_coarse_inputs():
    shapes = {k: FPN_SHAPES[k] for k in ("p3", "p4", "p5")}
    head = SemSegFPNHead(shapes, num_classes=K, convs_dim=32, common_stride=4).eval()
    assert [len(convs) for convs in head.scale_heads] == [1, 2, 3]
    logits = head.layers(_features(shapes, 45, 61))
    assert logits.shape == (2, K, 2 * math.ceil(45 / 8), 2 * math.ceil(61 / 8))
    with pytest.raises(ValueError, match="common_stride"):
        SemSegFPNHead({"p2": FPN_SHAPES["p2"]}, num_classes=K, convs_dim=32, common_stride=8)


def test_build_heads_from_cfg(tiny_cfg):
    cfg = tiny_cfg("UPerNetHead", aux=True)
    cfg.MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS = [1.0, 2.0, 1.0, 1.0, 0.5]
    cfg.MODEL.AUX_HEAD.NUM_CONVS = 2
    head = build_sem_seg_head(cfg, RES_SHAPES)
    assert isinstance(head, UPerNetHead) and head.in_features == ["res2", "res3", "res4", "res5"]
    assert head.class_weights.tolist() == [1.0, 2.0, 1.0, 1.0, 0.5]
    aux = build_aux_head(cfg, RES_SHAPES)
    assert isinstance(aux, FCNHead) and aux.in_feature == "res4"
    assert aux.loss_name == "loss_aux" and aux.loss_weight == pytest.approx(0.4)
    assert len(aux.convs) == 2 and aux.convs[0].conv.in_channels == 72
    assert aux.convs[0].out_channels == 32 and aux.num_classes == K
    cfg.MODEL.AUX_HEAD.ENABLED = False
    assert build_aux_head(cfg, RES_SHAPES) is None
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["res6"]
    with pytest.raises(ValueError, match="res6"):
        build_sem_seg_head(cfg, RES_SHAPES)


def test_fcn_as_main_head_reads_sem_seg_head(tiny_cfg):
    cfg = tiny_cfg("FCNHead")
    cfg.MODEL.SEM_SEG_HEAD.NUM_CONVS = 0
    head = build_sem_seg_head(cfg, RES_SHAPES)
    assert head.loss_name == "loss_sem_seg" and len(head.convs) == 0
    assert head.predictor.in_channels == RES_SHAPES["res5"].channels


def test_head_argument_checks():
    with pytest.raises(ValueError, match="loss_"):
        FCNHead(RES_SHAPES, num_classes=K, loss_name="aux")
    with pytest.raises(ValueError, match="2 class weights for 5 classes"):
        FCNHead(RES_SHAPES, num_classes=K, class_weights=[1.0, 2.0])


def test_ppm_concatenates_input_and_bins():
    from uper_parsing.modeling.sem_seg_heads import PPM

    ppm = PPM(8, 4, pool_scales=(1, 3), norm="").eval()
    x = torch.randn(1, 8, 7, 5)
    out = ppm(x)
    assert out.shape == (1, 8 + 2 * 4, 7, 5)
    torch.testing.assert_close(out[:, :8], x)
    pooled = ppm.branches[0](x)  # the 1x1 bin is constant over the map after resizing back
    torch.testing.assert_close(out[:, 8:12], pooled.expand(-1, -1, 7, 5))


def test_psp_and_fcn_read_res5_on_a_dilated_backbone():
    """At output stride 8, res4 and res5 share a stride: the heads read the deeper res5."""
    shapes = {"res4": ShapeSpec(channels=72, stride=8), "res5": ShapeSpec(channels=96, stride=8)}
    assert PSPHead(shapes, num_classes=K, convs_dim=32).in_feature == "res5"
    assert FCNHead(shapes, num_classes=K, convs_dim=32).in_feature == "res5"
