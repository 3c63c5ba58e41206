"""CSAIL (semantic-segmentation-pytorch, ``mit_semseg``) ADE20K models -> SemanticSegmentor: the
converted model reproduces CSAIL's own modules' outputs.

CSAIL's encoder and decoder are built from ``mit_semseg.models`` as ``ModelBuilder`` builds them,
without its ImageNet download (``resnet50(pretrained=False)`` wrapped in ``Resnet`` /
``ResnetDilated``; decoders with their constructors' random weights), then given random
BatchNorm affines and the running statistics of a random batch (so activations stay O(1) and an
absolute tolerance means something), and compared in eval mode at two input sizes, one not a
multiple of 32 (nor of 8).

CSAIL's UPerNet convolves each pyramid-pooling bin after upsampling it: the converted model does
too (``MODEL.SEM_SEG_HEAD.PPM_CONV_AFTER_UPSAMPLE``, set by ``csail_config_overrides``); with
mmseg's order (the default) the outputs differ, which a test shows.
"""

from __future__ import annotations

import pytest
import torch
from mit_semseg.models import models as csail_models
from mit_semseg.models import resnet as csail_resnet
from torch import nn

from uper_parsing.checkpoint.csail import (
    convert_csail_state_dicts,
    csail_config_overrides,
    is_csail_state_dict,
    split_csail_state_dict,
)
from uper_parsing.config import get_cfg
from uper_parsing.layers import resize_to
from uper_parsing.modeling.meta_arch import SemanticSegmentor

NUM_CLASSES = 7
SIZES = [(64, 96), (58, 74)]  # the second is not a multiple of 32, nor of 8
ATOL = 1e-4


def _images(size: tuple[int, int], batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


def _randomise_batchnorms(module: nn.Module, calibrate) -> None:
    """Random BN affines, then the running statistics of one random batch (momentum 1 in train
    mode: ``calibrate()`` runs the forward)."""
    g = torch.Generator().manual_seed(1)
    for norm in module.modules():
        if isinstance(norm, nn.modules.batchnorm._BatchNorm):
            norm.weight.data.uniform_(0.5, 1.5, generator=g)
            norm.bias.data.normal_(0.0, 0.1, generator=g)
            norm.momentum = 1.0
    module.train()
    with torch.no_grad():
        calibrate()
    module.eval()


def _csail_decoder(decoder: nn.Module, encoder: nn.Module) -> nn.Module:
    """A decoder with its constructor's random weights, BN calibrated on ``encoder``'s maps."""
    with torch.no_grad():
        features = encoder(_images((64, 64), batch=2, seed=3), return_feature_maps=True)
    _randomise_batchnorms(decoder, lambda: decoder(features))
    return decoder


@pytest.fixture(scope="module")
def encoders() -> dict[str, nn.Module]:
    """``ModelBuilder.build_encoder("resnet50" / "resnet50dilated")`` without the ImageNet
    download, both with the weights of one random deep-base ResNet-50 (BN calibrated)."""
    torch.manual_seed(0)
    plain = csail_models.Resnet(csail_resnet.resnet50(pretrained=False))
    x = _images((64, 64), batch=2, seed=2)
    _randomise_batchnorms(plain, lambda: plain(x, return_feature_maps=True))
    dilated = csail_models.ResnetDilated(csail_resnet.resnet50(pretrained=False), dilate_scale=8)
    dilated.load_state_dict(plain.state_dict())
    return {"resnet50": plain, "resnet50dilated": dilated.eval()}


def _our_model(arch_encoder: str, arch_decoder: str, *extra) -> SemanticSegmentor:
    cfg = get_cfg()
    cfg.merge_from_list(csail_config_overrides(arch_encoder, arch_decoder, NUM_CLASSES))
    cfg.merge_from_list(["MODEL.RESNETS.NORM", "BN", "MODEL.SEM_SEG_HEAD.NORM", "BN", *extra])
    return SemanticSegmentor(cfg).eval()


def _module_state(encoder: nn.Module, decoder: nn.Module) -> dict[str, torch.Tensor]:
    """What CSAIL's SegmentationModule(encoder, decoder).state_dict() holds."""
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state.update({f"decoder.{k}": v for k, v in decoder.state_dict().items()})
    return state


def _load_converted(model: nn.Module, encoder: nn.Module, decoder: nn.Module) -> None:
    """Convert through the one-file path (a SegmentationModule's state dict, split), load, and
    check that every tensor of the model is filled and nothing is left over."""
    module_state = _module_state(encoder, decoder)
    assert is_csail_state_dict(module_state)
    conversion = convert_csail_state_dicts(*split_csail_state_dict(module_state))
    assert conversion.kind == "model" and conversion.source_format == "csail"
    assert set(conversion.renamed) | set(conversion.ignored) == set(module_state)
    result = model.load_state_dict(conversion.state_dict, strict=False)
    assert not result.unexpected_keys
    assert all(k.endswith("num_batches_tracked") for k in result.missing_keys)


def _max_difference(model, encoder, decoder, *, deep_supervision: bool) -> float:
    """Max |difference| over SIZES of the log-probabilities at the head stride (with CSAIL's
    deep supervision against our auxiliary head), and of the probabilities at the input size on
    the odd size (CSAIL's ``use_softmax`` + ``segSize`` path)."""
    worst = 0.0
    for i, size in enumerate(SIZES):
        x = _images(size, seed=10 + i)
        with torch.no_grad():
            features = encoder(x, return_feature_maps=True)
            decoder.use_softmax = False
            reference = decoder(features)
            references = list(reference) if deep_supervision else [reference]
            ours_features = model.backbone(x)
            logits = model.sem_seg_head.layers(ours_features)
            ours = [logits.log_softmax(dim=1)]
            if deep_supervision:
                ours.append(model.aux_head.layers(ours_features).log_softmax(dim=1))
            if i == 1:
                decoder.use_softmax = True
                references.append(decoder(features, segSize=size))
                ours.append(resize_to(logits, size).softmax(dim=1))
        for mine, theirs in zip(ours, references, strict=True):
            assert mine.shape == theirs.shape
            worst = max(worst, (mine - theirs).abs().max().item())
    return worst


def test_pspnet50_matches_csail(encoders):
    """resnet50dilated + ppm_deepsup (CSAIL's PSPNet50): main and deep-supervision outputs."""
    encoder = encoders["resnet50dilated"]
    decoder = _csail_decoder(csail_models.PPMDeepsup(num_class=NUM_CLASSES, fc_dim=2048), encoder)
    model = _our_model("resnet50dilated", "ppm_deepsup")
    _load_converted(model, encoder, decoder)
    assert _max_difference(model, encoder, decoder, deep_supervision=True) <= ATOL


def test_upernet50_matches_csail(encoders):
    """resnet50 + CSAIL's UPerNet decoder (bins 1, 2, 3, 6, each conv after its upsampling);
    with the default (mmseg's) order the same weights give other outputs."""
    encoder = encoders["resnet50"]
    decoder = csail_models.UPerNet(num_class=NUM_CLASSES, fc_dim=2048, fpn_dim=512)
    decoder = _csail_decoder(decoder, encoder)
    model = _our_model("resnet50", "upernet")
    _load_converted(model, encoder, decoder)
    assert _max_difference(model, encoder, decoder, deep_supervision=False) <= ATOL
    model.sem_seg_head.ppm.conv_after_upsample = False
    assert _max_difference(model, encoder, decoder, deep_supervision=False) > 100 * ATOL


def test_csail_file_layouts(encoders):
    """An encoder file alone is split to its side; CSAIL's ImageNet encoder (with the
    classifier) converts to a bare ResNet; unknown keys and architectures are named."""
    encoder = encoders["resnet50"].state_dict()
    enc_alone, dec_alone = split_csail_state_dict(encoder)
    assert enc_alone.keys() == encoder.keys() and not dec_alone
    imagenet = {**encoder, "fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)}
    conversion = convert_csail_state_dicts(imagenet, {})
    assert conversion.kind == "resnet" and "encoder.fc.weight" in conversion.ignored
    assert conversion.state_dict["stem.conv3.weight"].shape == (128, 64, 3, 3)
    assert conversion.state_dict["res2.0.conv1.weight"].shape == (64, 128, 1, 1)
    decoder = {"ppm.0.1.weight": torch.zeros(1), "conv_last_extra.weight": torch.zeros(1)}
    with pytest.raises(ValueError, match="conv_last_extra.weight"):
        convert_csail_state_dicts({}, decoder)
    with pytest.raises(ValueError, match="crit.weight is in neither encoder nor decoder"):
        split_csail_state_dict({"encoder.conv1.weight": torch.zeros(1), "crit.weight": None})
    with pytest.raises(ValueError, match="arch_decoder 'c1_deepsup'"):
        csail_config_overrides("resnet50dilated", "c1_deepsup", 150)
