import logging
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.models import build_model_with_cfg, register_model
from torch import nn

from uper_parsing.config import get_cfg
from uper_parsing.layers import LayerNorm2d, get_norm
from uper_parsing.modeling import build_model
from uper_parsing.modeling.backbone import TimmBackbone, build_backbone

NAME = "convnext_atto"  # the smallest timm ConvNeXt: channels 40, 80, 160, 320; depths 2, 2, 6, 2
H, W = 45, 61


def _convnext(**kwargs) -> TimmBackbone:
    return TimmBackbone(**{"name": NAME, **kwargs})


def _levels(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The stage outputs of a whole timm ConvNeXt, computed by hand (stem, then each stage)."""
    levels, x = [], model.stem(x)
    for stage in model.stages:
        x = stage(x)
        levels.append(x)
    return levels


@pytest.fixture(scope="module")
def timm_convnext():
    """A whole timm ConvNeXt (classifier included) with random values in every tensor."""
    torch.manual_seed(0)
    model = timm.create_model(NAME, pretrained=False, num_classes=7).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def test_output_shape_matches_outputs():
    backbone = _convnext().eval()
    with torch.no_grad():
        outputs = backbone(torch.randn(1, 3, H, W))
    shapes = backbone.output_shape()
    assert {n: (s.channels, s.stride) for n, s in shapes.items()} == {
        "res2": (40, 4),
        "res3": (80, 8),
        "res4": (160, 16),
        "res5": (320, 32),
    }
    assert list(outputs) == list(shapes)
    for name, out in outputs.items():  # ConvNeXt's unpadded convs floor every size
        stride = shapes[name].stride
        assert tuple(out.shape) == (1, shapes[name].channels, H // stride, W // stride), name
    assert backbone.size_divisibility == 0


def test_out_indices_subset_prunes_later_stages():
    backbone = _convnext(out_indices=[1, 2]).eval()
    assert len(backbone.model.stages) == 3
    with torch.no_grad():
        outputs = backbone(torch.randn(1, 3, 64, 48))
    assert {n: tuple(o.shape) for n, o in outputs.items()} == {
        "res3": (1, 80, 8, 6),
        "res4": (1, 160, 4, 3),
    }
    assert list(backbone.output_shape()) == ["res3", "res4"]


def test_state_dict_names_are_timm_canonical():
    state = _convnext(out_norm="LN").state_dict()
    expected_shapes = {
        "model.stem.0.weight": (40, 3, 4, 4),
        "model.stem.1.weight": (40,),
        "model.stem.1.bias": (40,),
        "model.stages.1.downsample.0.weight": (40,),
        "model.stages.1.downsample.1.weight": (80, 40, 2, 2),
        "model.stages.3.downsample.1.bias": (320,),
        "model.stages.0.blocks.0.conv_dw.weight": (40, 1, 7, 7),
        "model.stages.0.blocks.1.norm.weight": (40,),
        # atto has timm's conv_mlp (1x1 convs); ConvNeXt T/S/B/L/XL have Linear layers here
        "model.stages.2.blocks.5.mlp.fc1.weight": (640, 160, 1, 1),
        "model.stages.2.blocks.5.mlp.fc2.bias": (160,),
        "model.stages.3.blocks.1.gamma": (320,),
        "norms.res2.weight": (40,),
        "norms.res5.bias": (320,),
    }
    for key, shape in expected_shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith(("model.head.", "model.norm_pre.")) for k in state)
    assert not any(k.startswith("model.stages.0.downsample") for k in state)
    assert not any(k.startswith("norms.") for k in _convnext().state_dict())


def test_out_norm_is_a_channels_first_layernorm(timm_convnext):
    backbone = _convnext(out_norm="LN").eval()
    backbone.model.load_state_dict(timm_convnext.state_dict(), strict=False)
    for norm in backbone.norms.values():
        nn.init.normal_(norm.weight)
        nn.init.normal_(norm.bias)
    x = torch.randn(2, 3, H, W)
    with torch.no_grad():
        outputs = backbone(x)
        levels = _levels(timm_convnext, x)
    for (name, out), level in zip(outputs.items(), levels):
        norm = backbone.norms[name]
        assert isinstance(norm, LayerNorm2d) and norm.eps == 1e-6
        ref = F.layer_norm(
            level.permute(0, 2, 3, 1), (level.shape[1],), norm.weight, norm.bias, 1e-6
        )
        torch.testing.assert_close(out, ref.permute(0, 3, 1, 2), rtol=1e-5, atol=1e-5)
    assert isinstance(get_norm("LN", 8), LayerNorm2d)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_timm_file_gives_timm_features(timm_convnext, tmp_path, caplog, suffix):
    """Weights saved from a whole timm model (classifier and final norm included) fill every
    tensor; the outputs are timm's own stage outputs."""
    path = str(tmp_path / f"convnext{suffix}")
    state = {k: v.contiguous() for k, v in timm_convnext.state_dict().items()}
    save_file(state, path) if suffix == ".safetensors" else torch.save({"state_dict": state}, path)
    with caplog.at_level(logging.INFO, logger="uper_parsing"):
        backbone = _convnext(pretrained=path).eval()
    assert "WARNING" not in caplog.text and "head.fc.weight" in caplog.text
    ours = backbone.model.state_dict()
    assert ours.keys() == {k for k in state if not k.startswith("head.")}
    assert all(torch.equal(v, state[k]) for k, v in ours.items())
    x = torch.randn(1, 3, H, W)
    with torch.no_grad():
        for out, ref in zip(backbone(x).values(), _levels(timm_convnext, x)):
            assert torch.equal(out, ref)


def test_pretrained_mismatches_are_logged(timm_convnext, tmp_path, caplog):
    state = dict(timm_convnext.state_dict())
    state.pop("stages.1.blocks.0.gamma")
    state["stem.0.weight"] = torch.zeros(40, 3, 3, 3)
    state["neck.proj.weight"] = torch.zeros(1)
    with caplog.at_level(logging.WARNING, logger="uper_parsing"):
        _convnext().load_pretrained_weights(state)
    assert "stem.0.weight: checkpoint (40, 3, 3, 3) vs model (40, 3, 4, 4)" in caplog.text
    assert "stages.1.blocks: 1 missing (0.gamma)" in caplog.text
    assert "neck: 1 unused (proj.weight)" in caplog.text
    assert "head" not in caplog.text
    with pytest.raises(FileNotFoundError, match="PRETRAINED='.*nowhere.pth'"):
        _convnext(pretrained=str(tmp_path / "nowhere.pth"))


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    backbone = _convnext(out_norm="LN").train()
    outputs = backbone(torch.randn(2, 3, H, W))
    sum((out * torch.randn_like(out)).sum() for out in outputs.values()).backward()
    for name, param in backbone.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_drop_path_changes_training_outputs_only():
    torch.manual_seed(0)
    plain = _convnext()
    dropping = _convnext(drop_path_rate=0.5)
    dropping.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        expected = plain.eval()(x)["res5"]
        assert torch.equal(dropping.eval()(x)["res5"], expected)
        assert not torch.allclose(dropping.train()(x)["res5"], expected)


@pytest.mark.parametrize("freeze_at", [0, 1, 2, 5])
def test_freeze_at(freeze_at):
    backbone = _convnext(freeze_at=freeze_at, drop_path_rate=0.5, out_norm="LN")
    groups = ["model.stem."] + [f"model.stages.{i}." for i in range(4)]
    frozen = tuple(groups[:freeze_at])
    for name, param in backbone.named_parameters():
        assert param.requires_grad != name.startswith(frozen), name
    backbone.train()
    modules = [backbone.model.stem, *backbone.model.stages]
    for i, module in enumerate(modules):
        assert all(m.training == (i >= freeze_at) for m in module.modules()), i
    with pytest.raises(ValueError, match="FREEZE_AT must be in \\[0, 5\\]"):
        _convnext(freeze_at=6)


def test_freeze_at_freezes_batchnorm_of_cnns():
    """timm CNNs with BatchNorm: the frozen stem's BN becomes a FrozenBatchNorm2d."""
    backbone = TimmBackbone(name="resnet10t", out_indices=[1, 2, 3, 4], freeze_at=2)
    assert list(backbone.output_shape()) == ["res2", "res3", "res4", "res5"]
    frozen = [m for m in backbone.model.modules() if type(m).__name__ == "FrozenBatchNorm2d"]
    trained = [m for m in backbone.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert frozen and trained
    assert all(not p.requires_grad for p in backbone.model.layer1.parameters())
    assert all(p.requires_grad for p in backbone.model.layer2.parameters())


class _PlainNet(nn.Module):
    """A timm-registered CNN without ``forward_intermediates``: the features_only fallback."""

    def __init__(self, in_chans: int = 3, num_classes: int = 10, **kwargs) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_chans, 8, 3, stride=2, padding=1)
        self.stages = nn.Sequential(
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.Conv2d(16, 32, 3, stride=2, padding=1)
        )
        self.head = nn.Linear(32, num_classes)
        self.feature_info = [
            {"num_chs": 8, "reduction": 2, "module": "stem"},
            {"num_chs": 16, "reduction": 4, "module": "stages.0"},
            {"num_chs": 32, "reduction": 8, "module": "stages.1"},
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)).mean((2, 3)))


@register_model
def uper_parsing_test_plainnet(pretrained: bool = False, **kwargs) -> nn.Module:
    return build_model_with_cfg(
        _PlainNet,
        "uper_parsing_test_plainnet",
        pretrained,
        feature_cfg={"flatten_sequential": True},
        **kwargs,
    )


def test_models_without_forward_intermediates_use_features_only(tmp_path):
    torch.manual_seed(0)
    whole = timm.create_model("uper_parsing_test_plainnet").eval()
    path = tmp_path / "plainnet.pth"
    torch.save(whole.state_dict(), path)
    backbone = TimmBackbone(
        name="uper_parsing_test_plainnet", out_indices=[1, 2], out_norm="LN", pretrained=str(path)
    ).eval()
    assert not backbone.uses_intermediates
    assert {n: (s.channels, s.stride) for n, s in backbone.output_shape().items()} == {
        "res2": (16, 4),
        "res3": (32, 8),
    }
    assert "model.stages_0.weight" in backbone.state_dict()  # the feature wrapper's names
    x = torch.randn(1, 3, H, W)
    with torch.no_grad():
        outputs = backbone(x)
        stage0 = whole.stages[0](whole.stem(x))
        expected = [stage0, whole.stages[1](stage0)]
    for (name, out), ref in zip(outputs.items(), expected):
        assert out.shape[-2:] == (
            math.ceil(H / 2 ** int(name[3:])),
            math.ceil(W / 2 ** int(name[3:])),
        )
        torch.testing.assert_close(out, backbone.norms[name](ref))
    with pytest.raises(ValueError, match="FREEZE_AT needs timm's group_matcher"):
        TimmBackbone(name="uper_parsing_test_plainnet", out_indices=[1, 2], freeze_at=1)


def test_invalid_levels_are_named():
    with pytest.raises(ValueError, match="OUT_INDICES .* two levels at stride 16"):
        TimmBackbone(name="test_vit", out_indices=[0, 1])


def _timm_cfg(cfg=None):
    """``cfg`` (default: a fresh one) set to a CPU ConvNeXt-atto with output LayerNorms."""
    cfg = cfg if cfg is not None else get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "build_timm_backbone"
    cfg.MODEL.TIMM.NAME = NAME
    cfg.MODEL.TIMM.OUT_NORM = "LN"
    cfg.MODEL.TIMM.DROP_PATH_RATE = 0.1
    return cfg


def test_build_from_cfg():
    cfg = _timm_cfg()
    cfg.MODEL.TIMM.OUT_INDICES = [0, 3]
    cfg.MODEL.BACKBONE.FREEZE_AT = 1
    backbone = build_backbone(cfg)
    assert isinstance(backbone, TimmBackbone)
    assert list(backbone.output_shape()) == ["res2", "res5"]
    assert list(backbone.norms) == ["res2", "res5"]
    assert not backbone.model.stem[0].weight.requires_grad
    assert backbone.model.stages[3].blocks[1].drop_path.drop_prob == pytest.approx(0.1)


def test_upernet_segmentor_runs_on_convnext(tiny_cfg, batched_inputs):
    cfg = _timm_cfg(tiny_cfg("UPerNetHead", aux=True))
    model = build_model(cfg)
    state = model.state_dict()
    assert "backbone.model.stem.0.weight" in state and "backbone.norms.res5.bias" in state
    assert "backbone.model.stages.1.downsample.1.weight" in state
    losses = model.train()(batched_inputs(with_labels=True))  # 45x45 and 61x37 images
    assert set(losses) == {"loss_sem_seg", "loss_aux"}
    sum(losses.values()).backward()
    with torch.no_grad():
        outputs = model.eval()(batched_inputs(with_labels=False))
    assert [tuple(o["sem_seg"].shape) for o in outputs] == [(5, 90, 90), (5, 30, 20)]
