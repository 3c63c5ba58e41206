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


def _flat(outputs) -> list[torch.Tensor]:
    """Every tensor in nested dicts / lists / tuples, in a fixed order."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        return [t for key in sorted(outputs) for t in _flat(outputs[key])]
    if isinstance(outputs, list | tuple):
        return [t for item in outputs for t in _flat(item)]
    return []


def _check_channels_last(build, train_batch, test_batch) -> None:
    """``build(channels_last: bool) -> model``. The channels-last model, given the NCHW model's
    weights, computes the same losses, gradients and inference outputs. In float64, so that any
    difference beyond rounding is a layout bug, not the summation order of NHWC kernels."""
    torch.manual_seed(0)
    ref = build(False).double()
    model = build(True).double()
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    model.load_state_dict(ref.state_dict())  # NCHW checkpoint into an NHWC model, and back
    ref.load_state_dict(model.state_dict())
    results = []
    for m in (ref, model):
        m.train()
        torch.manual_seed(1)  # the same RoI / anchor sampling in both
        losses = m(train_batch)
        sum(losses.values()).backward()
        grads = [p.grad for p in m.parameters() if p.grad is not None]
        with torch.no_grad():
            outputs = m.eval()(test_batch)
        results.append((losses, grads, _flat(outputs)))
    (ref_losses, ref_grads, ref_out), (losses, grads, out) = results
    torch.testing.assert_close(losses, ref_losses, rtol=1e-9, atol=1e-12)
    assert len(grads) == len(ref_grads) == len(list(ref.parameters()))
    for grad, ref_grad in zip(grads, ref_grads):
        assert (grad - ref_grad).norm() <= 1e-9 * ref_grad.norm() + 1e-12
    assert len(out) == len(ref_out) > 0
    for value, ref_value in zip(out, ref_out):
        torch.testing.assert_close(value, ref_value, rtol=1e-9, atol=1e-12)


@pytest.fixture
def check_channels_last():
    """``check_channels_last(build, train_batch, test_batch)``: see ``_check_channels_last``."""
    return _check_channels_last
