"""Tiny configs and inputs shared by the modeling tests (ResNet-18, 32-channel heads, 5 classes)."""

import pytest
import torch

from uper_parsing.config import get_cfg

NUM_CLASSES = 5

# Main head name -> (backbone builder, IN_FEATURES, auxiliary head IN_FEATURES)
HEADS = {
    "UPerNetHead": ("build_resnet_backbone", ["res2", "res3", "res4", "res5"], ["res4"]),
    "PSPHead": ("build_resnet_backbone", ["res5"], ["res4"]),
    "FCNHead": ("build_resnet_backbone", ["res5"], ["res4"]),
    "SemSegFPNHead": ("build_resnet_fpn_backbone", ["p2", "p3", "p4", "p5"], ["p4"]),
}


def _tiny_cfg(head: str = "UPerNetHead", *, aux: bool = False):
    backbone, in_features, aux_features = HEADS[head]
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = backbone
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.NORM = "BN"
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.SEM_SEG_HEAD.NAME = head
    cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES = in_features
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = NUM_CLASSES
    cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 32
    cfg.MODEL.SEM_SEG_HEAD.NORM = "GN" if head == "SemSegFPNHead" else "BN"
    cfg.MODEL.SEM_SEG_HEAD.DROPOUT = 0.0
    cfg.MODEL.AUX_HEAD.ENABLED = aux
    cfg.MODEL.AUX_HEAD.IN_FEATURES = aux_features
    cfg.MODEL.AUX_HEAD.CONVS_DIM = 32
    return cfg


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny models gain nothing from intra-op threads, while on a busy 2-core machine the
    OpenMP spin-waits of two threads make the suite several times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_cfg():
    """Factory: ``tiny_cfg(head="UPerNetHead", aux=False)`` -> CfgNode of a tiny CPU model."""
    return _tiny_cfg


def _inputs(with_labels: bool):
    """Two uint8 images of odd sizes (45x45 and 61x37), output sizes differing from them."""
    gen = torch.Generator().manual_seed(0)
    batch = []
    for (h, w), (out_h, out_w) in (((45, 45), (90, 90)), ((61, 37), (30, 20))):
        x = {"image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)}
        x.update(height=out_h, width=out_w)
        if with_labels:
            label = torch.randint(0, NUM_CLASSES, (h, w), generator=gen)
            label[:3] = 255
            x["sem_seg"] = label
        batch.append(x)
    return batch


@pytest.fixture
def batched_inputs():
    """Factory: ``batched_inputs(with_labels=True)`` -> list of two model input dicts."""
    return _inputs
