"""Parameter counts of the reference models, against the published (mmseg) figures."""

import pytest

from uper_parsing.config import get_cfg
from uper_parsing.modeling import build_model


def _count(model):
    return sum(p.numel() for p in model.parameters())


def _r50_cfg():
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.NORM = "BN"  # BN affine parameters count (FrozenBN holds buffers)
    cfg.MODEL.RESNETS.STEM_TYPE = "basic"
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 150
    cfg.MODEL.SEM_SEG_HEAD.NORM = "BN"
    return cfg


def _with_aux(cfg):
    cfg.MODEL.AUX_HEAD.ENABLED = True
    cfg.MODEL.AUX_HEAD.IN_FEATURES = ["res4"]
    cfg.MODEL.AUX_HEAD.CONVS_DIM = 256
    cfg.MODEL.AUX_HEAD.NUM_CONVS = 1
    return cfg


def upernet_r50_cfg():
    cfg = _with_aux(_r50_cfg())
    cfg.MODEL.SEM_SEG_HEAD.NAME = "UPerNetHead"
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 512
    return cfg


def pspnet_r50_d8_cfg():
    cfg = _with_aux(_r50_cfg())
    cfg.MODEL.RESNETS.OUTPUT_STRIDE = 8
    cfg.MODEL.SEM_SEG_HEAD.NAME = "PSPHead"
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["res5"]
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 512
    return cfg


def semantic_fpn_r50_cfg():
    cfg = _r50_cfg()
    cfg.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
    cfg.MODEL.FPN.OUT_CHANNELS = 256
    cfg.MODEL.SEM_SEG_HEAD.NAME = "SemSegFPNHead"
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 128
    cfg.MODEL.SEM_SEG_HEAD.NORM = "GN"
    cfg.MODEL.AUX_HEAD.ENABLED = False
    return cfg


def test_upernet_r50_matches_mmseg_figure():
    model = build_model(upernet_r50_cfg())
    assert _count(model) == pytest.approx(66.5e6, rel=0.01)
    assert _count(model) == 66_496_876
    assert _count(model.backbone) == 23_508_032  # torchvision resnet50 minus fc (2,049,000)


@pytest.mark.parametrize(
    "make_cfg, expected",
    [(pspnet_r50_d8_cfg, 49_057_132), (semantic_fpn_r50_cfg, 28_495_574)],
)
def test_reference_counts(make_cfg, expected):
    assert _count(build_model(make_cfg())) == expected
