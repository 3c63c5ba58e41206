"""SOLVER.LAYER_DECAY and SOLVER.WEIGHT_DECAY_OVERRIDES on tiny ConvNeXt / Swin UPerNets built from
the ADE20K recipes, against re-implementations, written from mmseg's / mmengine's source, of
mmseg's LearningRateDecayOptimizerConstructor and mmengine's paramwise custom_keys applied to the
parameter names mmseg's models have (ours mapped with the tables below)."""

import re
from pathlib import Path

import pytest
import torch
from torch import nn

from uper_parsing.config import get_cfg
from uper_parsing.modeling import build_model
from uper_parsing.solver import WeightDecayOverrides, build_optimizer

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "ade20k"

# Tiny versions of the recipes' models (the loss normaliser does not matter here)
TINY = [
    "MODEL.DEVICE", "cpu", "MODEL.BACKBONE.PRETRAINED", "", "MODEL.SEM_SEG_HEAD.NORM", "BN",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM", 16, "MODEL.AUX_HEAD.CONVS_DIM", 8,
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES", 5, "MODEL.SEM_SEG_HEAD.LOSS_AVG_NON_IGNORE", True,
]  # fmt: skip
TINY_CONVNEXT = ["MODEL.TIMM.NAME", "convnext_atto"]  # depths (2, 2, 6, 2)
TINY_SWIN = [
    "MODEL.SWIN.EMBED_DIM", 16, "MODEL.SWIN.DEPTHS", [1, 1, 2, 1],
    "MODEL.SWIN.NUM_HEADS", [1, 1, 2, 2], "MODEL.SWIN.APE", True,
]  # fmt: skip

# Our decode-head names -> mmseg's UPerHead / FCNHead names (its ConvModule norm is "bn")
_HEADS = [
    (r"sem_seg_head\.ppm\.branches\.(\d+)\.1\.norm\.", r"decode_head.psp_modules.\1.1.bn."),
    (r"sem_seg_head\.ppm\.branches\.(\d+)\.1\.conv\.", r"decode_head.psp_modules.\1.1.conv."),
    (
        r"sem_seg_head\.(bottleneck|fpn_bottleneck|lateral_convs\.\d+|fpn_convs\.\d+)\.norm\.",
        r"decode_head.\1.bn.",
    ),
    (
        r"sem_seg_head\.(bottleneck|fpn_bottleneck|lateral_convs\.\d+|fpn_convs\.\d+)\.conv\.",
        r"decode_head.\1.conv.",
    ),
    (r"sem_seg_head\.predictor\.", "decode_head.conv_seg."),
    (r"aux_head\.convs\.(\d+)\.norm\.", r"auxiliary_head.convs.\1.bn."),
    (r"aux_head\.convs\.(\d+)\.conv\.", r"auxiliary_head.convs.\1.conv."),
    (r"aux_head\.predictor\.", "auxiliary_head.conv_seg."),
]


def _out_norm(match: re.Match) -> str:
    return f"backbone.norm{int(match[1]) - 2}."  # our res2..res5 are mmseg's norm0..norm3


# timm ConvNeXt -> mmpretrain's ConvNeXt (mmseg's backbone)
CONVNEXT_TO_MMSEG = [
    (r"backbone\.model\.stem\.", "backbone.downsample_layers.0."),
    (r"backbone\.model\.stages\.(\d+)\.downsample\.", r"backbone.downsample_layers.\1."),
    (
        r"backbone\.model\.stages\.(\d+)\.blocks\.(\d+)\.conv_dw\.",
        r"backbone.stages.\1.\2.depthwise_conv.",
    ),
    (r"backbone\.model\.stages\.(\d+)\.blocks\.(\d+)\.norm\.", r"backbone.stages.\1.\2.norm."),
    (
        r"backbone\.model\.stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc(\d)\.",
        r"backbone.stages.\1.\2.pointwise_conv\3.",
    ),
    (r"backbone\.model\.stages\.(\d+)\.blocks\.(\d+)\.gamma$", r"backbone.stages.\1.\2.gamma"),
    (r"backbone\.norms\.res(\d)\.", _out_norm),
    *_HEADS,
]


def _swin_downsample(match: re.Match) -> str:
    # ours merges at the start of stage i >= 1, mmseg's at the end of stage i - 1
    return f"backbone.stages.{int(match[1]) - 1}.downsample."


def _swin_fc1(match: re.Match) -> str:
    return f"backbone.stages.{match[1]}.blocks.{match[2]}.ffn.layers.0.0."


def _swin_fc2(match: re.Match) -> str:
    return f"backbone.stages.{match[1]}.blocks.{match[2]}.ffn.layers.1."


# Our Swin -> mmseg's SwinTransformer
SWIN_TO_MMSEG = [
    (r"backbone\.patch_embed\.proj\.", "backbone.patch_embed.projection."),
    (r"backbone\.patch_embed\.norm\.", "backbone.patch_embed.norm."),
    (r"backbone\.absolute_pos_embed$", "backbone.absolute_pos_embed"),
    (r"backbone\.layers\.(\d+)\.downsample\.", _swin_downsample),
    (
        r"backbone\.layers\.(\d+)\.blocks\.(\d+)\.attn\.",
        r"backbone.stages.\1.blocks.\2.attn.w_msa.",
    ),
    (r"backbone\.layers\.(\d+)\.blocks\.(\d+)\.(norm\d)\.", r"backbone.stages.\1.blocks.\2.\3."),
    (r"backbone\.layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.", _swin_fc1),
    (r"backbone\.layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.", _swin_fc2),
    (r"backbone\.norms\.res(\d)\.", _out_norm),
    *_HEADS,
]  # fmt: skip


def to_mmseg(name: str, table) -> str:
    for pattern, replacement in table:
        mapped, hits = re.subn("^" + pattern, replacement, name, count=1)
        if hits:
            return mapped
    raise AssertionError(f"no mmseg name for {name}")


# --- mmseg's LearningRateDecayOptimizerConstructor (mmseg/engine/optimizers/
# layer_decay_optimizer_constructor.py), on mmseg's names


def mmseg_convnext_layer_id(var_name: str, max_layer_id: int) -> int:
    if var_name in ("backbone.cls_token", "backbone.mask_token", "backbone.pos_embed"):
        return 0
    if var_name.startswith("backbone.downsample_layers"):
        stage_id = int(var_name.split(".")[2])
        return {0: 0, 1: 2, 2: 3, 3: max_layer_id}[stage_id]
    if var_name.startswith("backbone.stages"):
        stage_id, block_id = int(var_name.split(".")[2]), int(var_name.split(".")[3])
        return {0: 1, 1: 2, 2: 3 + block_id // 3, 3: max_layer_id}[stage_id]
    return max_layer_id + 1


def mmseg_convnext_stage_id(var_name: str, max_stage_id: int) -> int:
    if var_name in ("backbone.cls_token", "backbone.mask_token", "backbone.pos_embed"):
        return 0
    if var_name.startswith("backbone.downsample_layers"):
        return 0
    if var_name.startswith("backbone.stages"):
        return int(var_name.split(".")[2]) + 1
    return max_stage_id - 1


def mmseg_lr_decay(shapes, *, base_lr, base_wd, decay_rate, decay_type, num_layers):
    """{mmseg name: (lr, weight_decay)} as the constructor's add_params sets them."""
    total_layers = num_layers + 2
    out = {}
    for name, shape in shapes.items():
        no_decay = len(shape) == 1 or name.endswith(".bias") or name in ("pos_embed", "cls_token")
        if "layer_wise" in decay_type:
            layer_id = mmseg_convnext_layer_id(name, num_layers)
        else:
            layer_id = mmseg_convnext_stage_id(name, total_layers)
        scale = decay_rate ** (total_layers - layer_id - 1)
        out[name] = (scale * base_lr, 0.0 if no_decay else base_wd)
    return out


# --- mmengine's DefaultOptimWrapperConstructor.add_params with only custom_keys (decay_mult)


def mmengine_custom_keys(names, *, base_lr, base_wd, decay_mults):
    sorted_keys = sorted(sorted(decay_mults), key=len, reverse=True)
    out = {}
    for name in names:
        decay = base_wd
        for key in sorted_keys:
            if key in name:
                decay = base_wd * decay_mults[key]
                break
        out[name] = (base_lr, decay)
    return out


def _recipe(name: str, *overrides):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / name))
    cfg.merge_from_list([*TINY, *overrides])
    return cfg


def _ours(cfg, model: nn.Module) -> dict[str, tuple[float, float]]:
    """{our parameter name: (lr, weight_decay)} of the optimizer built from cfg."""
    optimizer = build_optimizer(cfg, model)
    by_id = {
        id(p): (group["lr"], group["weight_decay"])
        for group in optimizer.param_groups
        for p in group["params"]
    }
    return {name: by_id[id(p)] for name, p in model.named_parameters()}


def _assert_same(ours: dict, reference: dict, table) -> None:
    assert len(ours) == len(reference)
    for name, (lr, decay) in ours.items():
        expected = reference[to_mmseg(name, table)]
        assert (lr, decay) == pytest.approx(expected, rel=1e-12, abs=0), name


@pytest.fixture(scope="module")
def convnext():
    torch.manual_seed(0)
    return build_model(_recipe("upernet_convnext_T_bs16_160k.yaml", *TINY_CONVNEXT))


@pytest.mark.parametrize("decay_type", ["stage_wise", "layer_wise"])
@pytest.mark.parametrize("num_layers", [6, 12])
def test_convnext_equals_mmseg_lr_decay(convnext, decay_type, num_layers):
    cfg = _recipe(
        "upernet_convnext_T_bs16_160k.yaml",
        *TINY_CONVNEXT,
        "SOLVER.LAYER_DECAY.TYPE", decay_type,
        "SOLVER.LAYER_DECAY.NUM_LAYERS", num_layers,
    )  # fmt: skip
    ours = _ours(cfg, convnext)
    shapes = {to_mmseg(n, CONVNEXT_TO_MMSEG): p.shape for n, p in convnext.named_parameters()}
    reference = mmseg_lr_decay(
        shapes,
        base_lr=1e-4,
        base_wd=0.05,
        decay_rate=0.9,
        decay_type=decay_type,
        num_layers=num_layers,
    )
    _assert_same(ours, reference, CONVNEXT_TO_MMSEG)
    # not vacuous: stage-wise has 5 backbone ids + the heads, layer-wise 6 (stage 2 has 6 blocks)
    scales = {round(lr / 1e-4, 12) for lr, _ in ours.values()}
    assert len(scales) == (6 if decay_type == "stage_wise" else 7)
    assert ours["sem_seg_head.predictor.weight"] == (1e-4, 0.05)
    assert ours["backbone.norms.res5.weight"] == (1e-4, 0.0)
    assert ours["backbone.model.stem.0.weight"] == pytest.approx(
        (1e-4 * 0.9 ** (num_layers + 1), 0.05)
    )


def test_swin_recipe_equals_mmengine_custom_keys():
    torch.manual_seed(0)
    cfg = _recipe("upernet_swin_T_bs16_160k.yaml", *TINY_SWIN)
    model = build_model(cfg)
    ours = _ours(cfg, model)
    names = [to_mmseg(n, SWIN_TO_MMSEG) for n, _ in model.named_parameters()]
    reference = mmengine_custom_keys(
        names,
        base_lr=6e-5,
        base_wd=0.01,
        decay_mults={"absolute_pos_embed": 0.0, "relative_position_bias_table": 0.0, "norm": 0.0},
    )
    _assert_same(ours, reference, SWIN_TO_MMSEG)
    # not vacuous: the substring "norm" hits our head norms, the head keys give them 0.01 back
    assert ours["sem_seg_head.bottleneck.norm.weight"] == (6e-5, 0.01)
    assert ours["backbone.layers.1.downsample.norm.weight"] == (6e-5, 0.0)
    assert ours["backbone.absolute_pos_embed"] == (6e-5, 0.0)
    assert ours["backbone.layers.0.blocks.0.attn.qkv.bias"] == (6e-5, 0.01)


def test_overrides_follow_mmengine_key_order():
    keys = {"ab": 1.0, "bc": 2.0, "abc": 3.0, "z": 4.0}
    overrides = WeightDecayOverrides.parse([f"{k}={v}" for k, v in keys.items()])
    names = ["x.abc.w", "x.ab.w", "x.bc.w", "x.abx.bcx", "x.z", "x.none"]
    reference = mmengine_custom_keys(names, base_lr=1.0, base_wd=1.0, decay_mults=keys)
    for name in names:
        expected = reference[name][1] if any(k in name for k in keys) else None
        assert overrides.lookup(name) == expected, name
    assert overrides.lookup("x.abx.bcx") == 1.0  # equal lengths: alphabetical first


NORM_BIAS = "SOLVER.WEIGHT_DECAY_NORM and SOLVER.WEIGHT_DECAY_BIAS"
NOT_AN_ENTRY = "is not 'substring=value'"


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["SOLVER.LAYER_DECAY.TYPE", "vit"], "SOLVER.LAYER_DECAY.TYPE = 'vit'"),
        (["SOLVER.WEIGHT_DECAY_BIAS", None], NORM_BIAS),
        (["SOLVER.WEIGHT_DECAY_NORM", 0.05], NORM_BIAS),
        (["SOLVER.WEIGHT_DECAY_OVERRIDES", ["norm:0"]], f"entry 'norm:0' {NOT_AN_ENTRY}"),
        (["SOLVER.WEIGHT_DECAY_OVERRIDES", ["norm=x"]], f"entry 'norm=x' {NOT_AN_ENTRY}"),
        (["SOLVER.WEIGHT_DECAY_OVERRIDES", ["=0"]], f"entry '=0' {NOT_AN_ENTRY}"),
        (["SOLVER.WEIGHT_DECAY_OVERRIDES", ["a=0", "a=1"]], "names 'a' twice"),
    ],
)
def test_errors_name_the_key(convnext, overrides, message):
    cfg = _recipe("upernet_convnext_T_bs16_160k.yaml", *TINY_CONVNEXT, *overrides)
    with pytest.raises(ValueError, match=re.escape(message)):
        build_optimizer(cfg, convnext)


def test_unknown_backbone_family_is_an_error_naming_the_key():
    cfg = _recipe(
        "upernet_R50_bs16_160k.yaml",
        "MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.NORM", "BN", "MODEL.RESNETS.STEM_TYPE", "basic",
        "SOLVER.LAYER_DECAY.ENABLED", True,
        "SOLVER.WEIGHT_DECAY_NORM", 0.0, "SOLVER.WEIGHT_DECAY_BIAS", 0.0,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"SOLVER.LAYER_DECAY.ENABLED: .* backbone 'ResNet'"):
        build_optimizer(cfg, build_model(cfg))
