import logging
import math
import re

import pytest
import torch
import torch.nn.functional as F

from uper_parsing.config import get_cfg
from uper_parsing.modeling import build_model
from uper_parsing.modeling.backbone import SwinTransformer, build_backbone
from uper_parsing.modeling.backbone.swin import WindowAttention, shifted_window_mask

# A tiny Swin: 4 stages of 2 blocks (one plain, one shifted), window 4
TINY = {"embed_dim": 24, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 3, 4), "window_size": 4}


def _tiny(**kwargs) -> SwinTransformer:
    return SwinTransformer(**{**TINY, "drop_path_rate": 0.0, **kwargs})


def _randomize(module: torch.nn.Module, seed: int = 0) -> None:
    """Random values in every parameter (norm weights, biases and bias tables included), so a
    wrongly mapped or unused tensor changes the outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3 + (1.0 if p.dim() == 1 else 0.0))


def _hf_swin(attn_implementation: str = "eager"):
    transformers = pytest.importorskip("transformers")
    config = transformers.SwinConfig(
        embed_dim=TINY["embed_dim"],
        depths=list(TINY["depths"]),
        num_heads=list(TINY["num_heads"]),
        window_size=TINY["window_size"],
        image_size=64,
        out_features=["stage1", "stage2", "stage3", "stage4"],
        attn_implementation=attn_implementation,
    )
    return transformers.SwinBackbone(config).eval()


def _hf_to_ours(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' SwinBackbone names -> ours: q / k / v stacked into qkv, the patch merging at
    the end of HF stage i -> the start of our stage i + 1, stage norms -> norms.res{i + 1}."""
    rules = [
        (r"swin\.embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
        (r"swin\.embeddings\.norm\.", "patch_embed.norm."),
        (
            r"swin\.encoder\.layers\.(\d+)\.downsample\.",
            lambda m: f"layers.{int(m[1]) + 1}.downsample.",
        ),
        (r"swin\.encoder\.layers\.", "layers."),
        (r"\.layernorm_before\.", ".norm1."),
        (r"\.layernorm_after\.", ".norm2."),
        (r"\.attention\.relative_position_bias\.", ".attn."),
        (r"\.attention\.o_proj\.", ".attn.proj."),
        (r"hidden_states_norms\.stage(\d)\.", lambda m: f"norms.res{int(m[1]) + 1}."),
    ]
    ours = {}
    for key, value in hf_state.items():
        if key.startswith("swin.layernorm."):  # the classifier's final norm, unused by the backbone
            continue
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        ours[key] = value
    for key in [k for k in ours if ".attention.q_proj." in k]:
        parts = [ours.pop(key.replace(".q_proj.", f".{p}_proj.")) for p in "qkv"]
        ours[key.replace(".attention.q_proj.", ".attn.qkv.")] = torch.cat(parts)
    return ours


@pytest.fixture(scope="module")
def hf_and_ours():
    """transformers' SwinBackbone (eager attention, random values everywhere) and ours with its
    weights; ours must take every tensor and leave none of its own unset."""
    hf = _hf_swin()
    _randomize(hf)
    ours = _tiny().eval()
    result = ours.load_state_dict(_hf_to_ours(hf.state_dict()), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return hf, ours


# 200x232 and 160x224 (not multiples of 32, nor of window * 32 = 128): maps 50x58, 25x29, 13x15,
# 7x8 and 40x56, 20x28, 10x14, 5x7 are padded to the window (4) in every stage but one, so the
# pad-THEN-shift order is exercised (timm's shift-then-pad differs there). 45x61: odd sizes, and
# res5 (2x2) smaller than the window, which neither mmseg nor HF's backbone shrinks.
@pytest.mark.parametrize("size", [(200, 232), (160, 224), (45, 61)])
def test_matches_transformers_swin_backbone(hf_and_ours, size):
    hf, ours = hf_and_ours
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(x).feature_maps
        outputs = ours(x)
    assert list(outputs) == ["res2", "res3", "res4", "res5"]
    for out, ref in zip(outputs.values(), expected):
        assert out.shape == ref.shape
        assert (out - ref).abs().max().item() <= 1e-4


def test_sdpa_attention_equals_explicit_softmax():
    """The fused attention call gives the numbers of mmseg's explicit computation:
    softmax(q k^T * d^-0.5 + bias + mask) v, then the projection."""
    torch.manual_seed(0)
    attn = WindowAttention(dim=12, num_heads=3, window_size=4, qkv_bias=True).eval()
    _randomize(attn)
    mask = shifted_window_mask(8, 12, 4, 2, dtype=torch.float32, device=torch.device("cpu"))
    x = torch.randn(2 * mask.shape[0], 16, 12)
    q, k, v = attn.qkv(x).view(-1, 16, 3, 3, 4).permute(2, 0, 3, 1, 4)
    logits = (q * 4**-0.5) @ k.transpose(-2, -1) + attn.relative_position_bias()
    logits = (logits.view(2, -1, 3, 16, 16) + mask[None, :, None]).view(-1, 3, 16, 16)
    expected = attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(-1, 16, 12))
    with torch.no_grad():
        assert (attn(x, mask) - expected).abs().max().item() <= 1e-5
        unmasked = (q * 4**-0.5) @ k.transpose(-2, -1) + attn.relative_position_bias()
        plain = attn.proj((unmasked.softmax(-1) @ v).transpose(1, 2).reshape(-1, 16, 12))
        assert (attn(x) - plain).abs().max().item() <= 1e-5


def test_shifted_window_mask_separates_the_rolled_regions():
    """An 8x8 map, window 4, shift 2: the last window row / column holds tokens from the map's
    two ends after the roll; only tokens of one region attend to each other."""
    mask = shifted_window_mask(8, 8, 4, 2, dtype=torch.float32, device=torch.device("cpu"))
    assert mask.shape == (4, 16, 16) and set(mask.unique().tolist()) == {-100.0, 0.0}
    assert mask[0].eq(0).all()  # the top-left window is one region
    region = torch.tensor([0, 0, 1, 1]).repeat(4)  # window 1: map columns 4-5 vs 6-7
    assert torch.equal(mask[1] == 0, region[:, None] == region[None, :])
    assert (mask[3] == 0).sum() == 4 * 4 * 4  # window 3: four 2x2 regions


def _check_output_shape(backbone, height=45, width=61):
    backbone.eval()
    with torch.no_grad():
        outputs = backbone(torch.randn(1, 3, height, width))
    shapes = backbone.output_shape()
    assert list(outputs) == list(shapes)
    for name, out in outputs.items():
        stride = shapes[name].stride
        expected = (1, shapes[name].channels, math.ceil(height / stride), math.ceil(width / stride))
        assert tuple(out.shape) == expected, name
        assert out.is_contiguous()
    return outputs


def test_output_shape_and_names():
    backbone = _tiny()
    _check_output_shape(backbone)
    assert {n: (s.channels, s.stride) for n, s in backbone.output_shape().items()} == {
        "res2": (24, 4),
        "res3": (48, 8),
        "res4": (96, 16),
        "res5": (192, 32),
    }
    subset = _tiny(out_features=["res3"])
    assert len(subset.layers) == 2 and list(subset.norms) == ["res3"]
    assert list(_check_output_shape(subset, 33, 70)) == ["res3"]
    assert list(_tiny(patch_size=2).output_shape()) == ["res1", "res2", "res3", "res4"]


def test_state_dict_names_are_timm_layout():
    state = _tiny(ape=True, pretrain_img_size=64).state_dict()
    expected_shapes = {
        "patch_embed.proj.weight": (24, 3, 4, 4),
        "patch_embed.proj.bias": (24,),
        "patch_embed.norm.weight": (24,),
        "absolute_pos_embed": (1, 256, 24),
        "layers.0.blocks.0.norm1.weight": (24,),
        "layers.0.blocks.1.attn.qkv.weight": (72, 24),
        "layers.0.blocks.1.attn.qkv.bias": (72,),
        "layers.0.blocks.1.attn.relative_position_bias_table": (49, 1),
        "layers.0.blocks.1.attn.proj.weight": (24, 24),
        "layers.0.blocks.1.norm2.bias": (24,),
        "layers.0.blocks.1.mlp.fc1.weight": (96, 24),
        "layers.0.blocks.1.mlp.fc2.weight": (24, 96),
        "layers.1.downsample.norm.weight": (96,),
        "layers.1.downsample.reduction.weight": (48, 96),
        "layers.3.blocks.1.attn.relative_position_bias_table": (49, 4),
        "norms.res2.weight": (24,),
        "norms.res5.bias": (192,),
    }
    for key, shape in expected_shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith("layers.0.downsample") for k in state)
    assert not any("relative_position_index" in k for k in state)
    assert "layers.1.downsample.reduction.bias" not in state
    assert "absolute_pos_embed" not in _tiny().state_dict()


def test_loads_timm_swin_weights_by_name(tmp_path, caplog):
    """A timm SwinTransformer's state dict (classifier and final norm included) fills every
    tensor of ours; at 128x128 (maps 32, 16, 8: no padding, no shrinking) timm computes the
    same stages, so the names also carry the same meaning. (At 64x64 they would not: timm drops
    the shift of a stage whose map is no larger than the window, mmseg does not.)"""
    from timm.models.swin_transformer import SwinTransformer as TimmSwin

    timm_swin = TimmSwin(
        img_size=128, patch_size=4, embed_dim=24, depths=(2, 2, 2), num_heads=(1, 2, 3),
        window_size=4, num_classes=5,
    ).eval()  # fmt: skip
    _randomize(timm_swin)
    path = tmp_path / "swin_timm.pth"
    torch.save(timm_swin.state_dict(), path)
    with caplog.at_level(logging.INFO, logger="uper_parsing"):
        ours = _tiny(depths=(2, 2, 2), num_heads=(1, 2, 3), pretrained=str(path)).eval()
    assert "WARNING" not in caplog.text
    assert "head.fc.weight" in caplog.text and "norm.weight" in caplog.text
    for key, value in ours.state_dict().items():
        if not key.startswith("norms."):
            assert torch.equal(value, timm_swin.state_dict()[key]), key
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        expected = timm_swin.forward_intermediates(x, intermediates_only=True)
        outputs = ours(x)
    for (name, out), ref in zip(outputs.items(), expected):
        norm = ours.norms[name]
        ref = F.layer_norm(ref.permute(0, 2, 3, 1), ref.shape[1:2], norm.weight, norm.bias)
        assert (out - ref.permute(0, 3, 1, 2)).abs().max().item() <= 1e-4, name


def test_pretrained_mismatches_are_logged(tmp_path, caplog):
    state = _tiny().state_dict()
    state.pop("layers.0.blocks.0.mlp.fc1.bias")
    state["layers.0.blocks.0.attn.relative_position_bias_table"] = torch.zeros(25, 1)
    state["extra.weight"] = torch.zeros(1)
    with caplog.at_level(logging.WARNING, logger="uper_parsing"):
        _tiny().load_pretrained_weights(state)
    assert "relative_position_bias_table: checkpoint (25, 1) vs model (49, 1)" in caplog.text
    assert "layers.0.blocks.0.mlp: 1 missing (fc1.bias)" in caplog.text
    assert "extra: 1 unused (weight)" in caplog.text
    with pytest.raises(FileNotFoundError, match="PRETRAINED='.*nowhere.pth'"):
        _tiny(pretrained=str(tmp_path / "nowhere.pth"))


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    backbone = _tiny(ape=True, pretrain_img_size=64).train()
    outputs = backbone(torch.randn(2, 3, 45, 61))  # APE resized from 16x16 to 12x16
    sum((out * torch.randn_like(out)).sum() for out in outputs.values()).backward()
    for name, param in backbone.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_drop_path_changes_training_outputs_only():
    torch.manual_seed(0)
    plain = _tiny()
    dropping = _tiny(drop_path_rate=0.5)
    dropping.load_state_dict(plain.state_dict())
    rates = [getattr(b.drop_path, "p", 0.0) for stage in dropping.layers for b in stage.blocks]
    assert rates[0] == 0.0 and rates[-1] == 0.5 and rates == sorted(rates)
    x = torch.randn(4, 3, 45, 61)
    with torch.no_grad():
        expected = plain.eval()(x)["res5"]
        assert torch.equal(dropping.eval()(x)["res5"], expected)
        assert not torch.allclose(dropping.train()(x)["res5"], expected)


@pytest.mark.parametrize("freeze_at", [0, 1, 3, 5])
def test_freeze_at(freeze_at):
    backbone = _tiny(ape=True, pretrain_img_size=64, drop_path_rate=0.5, freeze_at=freeze_at)
    groups = [("patch_embed.", "absolute_pos_embed")]
    groups += [(f"layers.{i}.", f"norms.res{i + 2}.") for i in range(4)]
    frozen_prefixes = tuple(p for group in groups[:freeze_at] for p in group)
    for name, param in backbone.named_parameters():
        assert param.requires_grad != name.startswith(frozen_prefixes), name
    backbone.train()
    frozen_stages = backbone.layers[: max(freeze_at - 1, 0)]
    assert all(not m.training for stage in frozen_stages for m in stage.modules())
    assert all(
        m.training for stage in backbone.layers[len(frozen_stages) :] for m in stage.modules()
    )
    with pytest.raises(ValueError, match="FREEZE_AT must be in \\[0, 5\\]"):
        _tiny(freeze_at=6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"patch_size": 3}, "PATCH_SIZE"),
        ({"num_heads": (1, 2, 3)}, "NUM_HEADS"),
        ({"num_heads": (1, 2, 5, 4)}, "NUM_HEADS\\[2\\] = 5"),
        ({"out_features": ["res6"]}, "OUT_FEATURES"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _tiny(**kwargs)


def _swin_cfg(cfg=None):
    """``cfg`` (default: a fresh one) set to a tiny CPU Swin."""
    cfg = cfg if cfg is not None else get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "build_swin_backbone"
    cfg.MODEL.SWIN.EMBED_DIM = 24
    cfg.MODEL.SWIN.DEPTHS = [2, 2, 2, 2]
    cfg.MODEL.SWIN.NUM_HEADS = [1, 2, 3, 4]
    cfg.MODEL.SWIN.WINDOW_SIZE = 4
    return cfg


def test_build_from_cfg():
    cfg = _swin_cfg()
    cfg.MODEL.SWIN.OUT_FEATURES = ["res2", "res4"]
    cfg.MODEL.BACKBONE.FREEZE_AT = 1
    backbone = build_backbone(cfg)
    assert isinstance(backbone, SwinTransformer) and backbone.size_divisibility == 0
    assert list(_check_output_shape(backbone)) == ["res2", "res4"]
    assert not backbone.patch_embed.proj.weight.requires_grad
    assert backbone.layers[1].blocks[1].drop_path.p == pytest.approx(0.3 * 3 / 7)


def test_upernet_segmentor_runs_on_swin(tiny_cfg, batched_inputs):
    cfg = _swin_cfg(tiny_cfg("UPerNetHead", aux=True))
    model = build_model(cfg)
    assert "backbone.layers.1.downsample.reduction.weight" in model.state_dict()
    assert "backbone.norms.res5.weight" in model.state_dict()
    losses = model.train()(batched_inputs(with_labels=True))  # 45x45 and 61x37 images
    assert set(losses) == {"loss_sem_seg", "loss_aux"}
    sum(losses.values()).backward()
    with torch.no_grad():
        outputs = model.eval()(batched_inputs(with_labels=False))
    assert [tuple(o["sem_seg"].shape) for o in outputs] == [(5, 90, 90), (5, 30, 20)]
