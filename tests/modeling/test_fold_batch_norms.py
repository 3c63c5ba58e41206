"""TEST.FOLD_BATCH_NORM: BatchNorms folded into their convolutions give the same outputs."""

import copy

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from uper_parsing.layers import ConvNormAct, fold_batch_norms
from uper_parsing.modeling import build_model, prepare_for_inference
from uper_parsing.modeling.meta_arch.build import folds_batch_norms

BATCH_NORMS = (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d)


def _randomise_statistics(model: nn.Module) -> None:
    """Statistics and affine parameters far from the identity, so an unfolded or wrongly folded
    norm changes the outputs."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, BATCH_NORMS):
                c = m.running_mean.numel()
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=gen) * 2 + 0.25)
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.2)


def _count(model: nn.Module, kinds) -> int:
    return sum(isinstance(m, kinds) for m in model.modules())


@pytest.mark.parametrize(
    "head, stem", [("UPerNetHead", "basic"), ("PSPHead", "deep"), ("SemSegFPNHead", "basic")]
)
def test_folded_model_predicts_what_the_unfolded_one_does(tiny_cfg, batched_inputs, head, stem):
    cfg = tiny_cfg(head, aux=True)
    cfg.MODEL.RESNETS.STEM_TYPE = stem
    cfg.MODEL.RESNETS.OUTPUT_STRIDE = 8 if head == "PSPHead" else 32
    torch.manual_seed(0)
    model = build_model(cfg)
    _randomise_statistics(model)
    model.eval()
    norms = _count(model, BATCH_NORMS)
    folded_model = copy.deepcopy(model)
    assert fold_batch_norms(folded_model) == norms > 0  # every BatchNorm here follows a conv
    assert _count(folded_model, BATCH_NORMS) == 0
    inputs = batched_inputs(with_labels=False)
    with torch.no_grad():
        expected, folded = model(inputs), folded_model(inputs)
    for out, ref in zip(folded, expected, strict=True):
        scale = ref["sem_seg"].abs().max()
        torch.testing.assert_close(out["sem_seg"], ref["sem_seg"], rtol=1e-4, atol=1e-5 * scale)


def test_frozen_batch_norm_and_channels_last_weights_fold():
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), FrozenBatchNorm2d(8), nn.ReLU())
    _randomise_statistics(block)
    block.to(memory_format=torch.channels_last).eval()
    x = torch.randn(2, 3, 9, 11).contiguous(memory_format=torch.channels_last)
    expected = block(x)
    assert fold_batch_norms(block) == 1 and isinstance(block[1], nn.Identity)
    assert block[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_norms_that_do_not_follow_a_conv_are_kept():
    # BN after a ReLU (Sequential), a GroupNorm, a conv subclass: none may fold
    class ScaledConv(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * 2

    model = nn.Sequential(
        nn.Conv2d(3, 4, 1), nn.ReLU(), nn.BatchNorm2d(4), ScaledConv(4, 4, 1), nn.BatchNorm2d(4)
    )
    model.add_module("gn", ConvNormAct(4, 32, 1, norm="GN"))
    model.eval()
    assert fold_batch_norms(model) == 0
    assert _count(model, nn.BatchNorm2d) == 2


def test_fold_refuses_a_training_model(tiny_cfg):
    model = build_model(tiny_cfg())
    with pytest.raises(ValueError, match=r"eval mode \(call model.eval\(\) first\)"):
        fold_batch_norms(model.train())


@pytest.mark.parametrize("choice, folds", [("auto", True), ("never", False), ("always", True)])
def test_prepare_for_inference_follows_the_config_key(tiny_cfg, choice, folds):
    cfg = tiny_cfg()
    cfg.TEST.FOLD_BATCH_NORM = choice
    model = prepare_for_inference(build_model(cfg), cfg)
    assert not model.training
    assert (_count(model, BATCH_NORMS) == 0) == folds


@pytest.mark.parametrize(
    "choice, device, compiled, folds",
    [
        ("auto", "cpu", False, True),
        ("auto", "cuda", False, False),  # eager CUDA adds a conv's bias in a pass of its own
        ("auto", "cuda", True, True),
        ("always", "cuda", False, True),
        ("never", "cpu", True, False),
    ],
)
def test_auto_folds_on_the_cpu_and_under_compile(tiny_cfg, choice, device, compiled, folds):
    cfg = tiny_cfg()
    cfg.TEST.FOLD_BATCH_NORM = choice
    cfg.MODEL.COMPILE.ENABLED = compiled
    assert folds_batch_norms(cfg, torch.device(device)) == folds


def test_an_unknown_choice_names_the_key(tiny_cfg):
    cfg = tiny_cfg()
    cfg.TEST.FOLD_BATCH_NORM = "yes"
    with pytest.raises(ValueError, match=r"TEST.FOLD_BATCH_NORM is 'yes'; expected one of"):
        folds_batch_norms(cfg, torch.device("cpu"))
