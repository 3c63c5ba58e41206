"""The ADE20K recipes carry mmseg 1.x's numbers (configs/_base_/schedules/schedule_160k.py,
datasets/ade20k.py, ade20k_640x640.py, models/*.py and the upernet / pspnet / sem_fpn / convnext /
swin ADE20K configs), and tiny versions of them train and infer."""

from pathlib import Path

import pytest
import torch

from uper_parsing.checkpoint.csail import csail_config_overrides
from uper_parsing.config import get_cfg
from uper_parsing.modeling import build_model

ROOT = Path(__file__).resolve().parents[2] / "configs"
ADE = ROOT / "ade20k"

EVERY = {
    "MODEL.SEM_SEG_HEAD.NUM_CLASSES": 150,
    "MODEL.SEM_SEG_HEAD.NORM": "SyncBN",
    "MODEL.SEM_SEG_HEAD.DROPOUT": 0.1,
    "MODEL.SEM_SEG_HEAD.LOSS_AVG_NON_IGNORE": False,
    "INPUT.RATIO_RANGE": [0.5, 2.0],
    "INPUT.CROP.SINGLE_CATEGORY_MAX_AREA": 0.75,
    "INPUT.INTERPOLATION": "cv2_bilinear",
    "SOLVER.MAX_ITER": 160000,
    "SOLVER.IMS_PER_BATCH": 16,
    "SOLVER.LR_SCHEDULER_NAME": "WarmupPolyLR",
    "SOLVER.SCHEDULE_STYLE": "mmengine",
    "TEST.PAD_TO_DIVISIBILITY": False,
}
AUX = {
    "MODEL.AUX_HEAD.ENABLED": True,
    "MODEL.AUX_HEAD.IN_FEATURES": ["res4"],
    "MODEL.AUX_HEAD.CONVS_DIM": 256,
    "MODEL.AUX_HEAD.NUM_CONVS": 1,
    "MODEL.AUX_HEAD.LOSS_WEIGHT": 0.4,
}
AT_512 = {
    "INPUT.CROP.SIZE": [512, 512],
    "INPUT.RESIZE_SCALE": [2048, 512],
    "INPUT.MIN_SIZE_TEST": 512,
    "INPUT.MAX_SIZE_TEST": 2048,
}
AT_640 = {
    "INPUT.CROP.SIZE": [640, 640],
    "INPUT.RESIZE_SCALE": [2560, 640],
    "INPUT.MIN_SIZE_TEST": 640,
    "INPUT.MAX_SIZE_TEST": 2560,
    "TEST.SLIDE_CROP_SIZE": [640, 640],
    "TEST.SLIDE_STRIDE": [426, 426],
}
R50 = {  # schedule_160k + ResNetV1c
    "MODEL.BACKBONE.PRETRAINED": "https://download.openmmlab.com/pretrain/third_party/resnet50_v1c-2cccc1ad.pth",
    "MODEL.RESNETS.DEPTH": 50,
    "MODEL.RESNETS.STEM_TYPE": "deep",
    "MODEL.RESNETS.NORM": "SyncBN",
    "MODEL.BACKBONE.FREEZE_AT": 0,
    "SOLVER.OPTIMIZER": "SGD",
    "SOLVER.BASE_LR": 0.01,
    "SOLVER.BASE_LR_END": 1e-4,
    "SOLVER.MOMENTUM": 0.9,
    "SOLVER.WEIGHT_DECAY": 5e-4,
    "SOLVER.WEIGHT_DECAY_NORM": 5e-4,
    "SOLVER.WEIGHT_DECAY_BIAS": 5e-4,
    "SOLVER.POLY_LR_POWER": 0.9,
    "SOLVER.WARMUP_ITERS": 0,
    "TEST.MODE": "whole",
    **AT_512,
}
ADAMW = {
    "SOLVER.OPTIMIZER": "AdamW",
    "SOLVER.BETAS": [0.9, 0.999],
    "SOLVER.BASE_LR_END": 0.0,
    "SOLVER.POLY_LR_POWER": 1.0,
    "SOLVER.WARMUP_ITERS": 1500,
    "SOLVER.WARMUP_FACTOR": 1e-6,
    "SOLVER.WARMUP_METHOD": "linear",
    "MODEL.SEM_SEG_HEAD.NAME": "UPerNetHead",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM": 512,
    **AUX,
}
CONVNEXT = {
    **ADAMW,
    "MODEL.BACKBONE.NAME": "build_timm_backbone",
    "MODEL.TIMM.OUT_NORM": "LN",
    "SOLVER.BASE_LR": 1e-4,
    "SOLVER.WEIGHT_DECAY": 0.05,
    "SOLVER.LAYER_DECAY.ENABLED": True,
    "SOLVER.LAYER_DECAY.RATE": 0.9,
    "SOLVER.LAYER_DECAY.TYPE": "stage_wise",
    "SOLVER.AMP.ENABLED": True,
    "SOLVER.AMP.DTYPE": "float16",
    "TEST.MODE": "slide",
}
MMCLS = "https://download.openmmlab.com/mmclassification/v0/convnext/downstream/convnext-"
SWIN_URL = "https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/swin/swin_"
SWIN = {
    **ADAMW,
    **AT_512,
    "MODEL.BACKBONE.NAME": "build_swin_backbone",
    "MODEL.SWIN.WINDOW_SIZE": 7,
    "MODEL.SWIN.DROP_PATH_RATE": 0.3,
    "MODEL.SWIN.APE": False,
    "SOLVER.BASE_LR": 6e-5,
    "SOLVER.WEIGHT_DECAY": 0.01,
    "SOLVER.LAYER_DECAY.ENABLED": False,
    "SOLVER.AMP.ENABLED": False,
    "SOLVER.WEIGHT_DECAY_OVERRIDES": [
        "absolute_pos_embed=0.0",
        "relative_position_bias_table=0.0",
        "norm=0.0",
        "sem_seg_head.=0.01",
        "aux_head.=0.01",
    ],
    "TEST.MODE": "whole",
}

RECIPES = {
    "upernet_R50_bs16_160k.yaml": {**R50, **AUX, "MODEL.SEM_SEG_HEAD.NAME": "UPerNetHead"},
    "pspnet_R50D8_bs16_160k.yaml": {
        **R50,
        **AUX,
        "MODEL.SEM_SEG_HEAD.NAME": "PSPHead",
        "MODEL.RESNETS.OUTPUT_STRIDE": 8,
    },
    "semantic_fpn_R50_bs16_160k.yaml": {
        **R50,
        "MODEL.SEM_SEG_HEAD.NAME": "SemSegFPNHead",
        "MODEL.SEM_SEG_HEAD.CONVS_DIM": 128,
        "MODEL.FPN.NORM": "",
        "MODEL.FPN.TOP_BLOCK": "",
        "MODEL.FPN.OUT_CHANNELS": 256,
        "MODEL.AUX_HEAD.ENABLED": False,
    },
    "upernet_convnext_T_bs16_160k.yaml": {
        **CONVNEXT,
        **AT_512,
        "MODEL.TIMM.NAME": "convnext_tiny",
        "MODEL.TIMM.DROP_PATH_RATE": 0.4,
        "SOLVER.LAYER_DECAY.NUM_LAYERS": 6,
        "MODEL.BACKBONE.PRETRAINED": MMCLS
        + "tiny_3rdparty_32xb128-noema_in1k_20220301-795e9634.pth",
    },
    "upernet_convnext_S_bs16_160k.yaml": {
        **CONVNEXT,
        **AT_512,
        "MODEL.TIMM.NAME": "convnext_small",
        "MODEL.TIMM.DROP_PATH_RATE": 0.3,
        "SOLVER.LAYER_DECAY.NUM_LAYERS": 12,
        "MODEL.BACKBONE.PRETRAINED": MMCLS
        + "small_3rdparty_32xb128-noema_in1k_20220301-303e75e3.pth",
    },
    "upernet_convnext_B_bs16_160k.yaml": {
        **CONVNEXT,
        **AT_512,
        "MODEL.TIMM.NAME": "convnext_base",
        "MODEL.TIMM.DROP_PATH_RATE": 0.4,
        "SOLVER.LAYER_DECAY.NUM_LAYERS": 12,
        "MODEL.BACKBONE.PRETRAINED": MMCLS
        + "base_3rdparty_32xb128-noema_in1k_20220301-2a0ee547.pth",
    },
    "upernet_convnext_L_bs16_160k.yaml": {
        **CONVNEXT,
        **AT_640,
        "MODEL.TIMM.NAME": "convnext_large",
        "MODEL.TIMM.DROP_PATH_RATE": 0.4,
        "SOLVER.LAYER_DECAY.NUM_LAYERS": 12,
        "MODEL.BACKBONE.PRETRAINED": MMCLS + "large_3rdparty_in21k_20220301-e6e0ea0a.pth",
    },
    "upernet_convnext_XL_bs16_160k.yaml": {
        **CONVNEXT,
        **AT_640,
        "MODEL.TIMM.NAME": "convnext_xlarge",
        "MODEL.TIMM.DROP_PATH_RATE": 0.4,
        "SOLVER.LAYER_DECAY.NUM_LAYERS": 12,
        "SOLVER.BASE_LR": 8e-5,
        "MODEL.BACKBONE.PRETRAINED": MMCLS + "xlarge_3rdparty_in21k_20220301-08aa5ddc.pth",
    },
    "upernet_swin_T_bs16_160k.yaml": {
        **SWIN,
        "MODEL.SWIN.EMBED_DIM": 96,
        "MODEL.SWIN.DEPTHS": [2, 2, 6, 2],
        "MODEL.SWIN.NUM_HEADS": [3, 6, 12, 24],
        "MODEL.BACKBONE.PRETRAINED": SWIN_URL + "tiny_patch4_window7_224_20220317-1cdeb081.pth",
    },
    "upernet_swin_S_bs16_160k.yaml": {
        **SWIN,
        "MODEL.SWIN.EMBED_DIM": 96,
        "MODEL.SWIN.DEPTHS": [2, 2, 18, 2],
        "MODEL.SWIN.NUM_HEADS": [3, 6, 12, 24],
        "MODEL.BACKBONE.PRETRAINED": SWIN_URL + "small_patch4_window7_224_20220317-7ba6d6dd.pth",
    },
    "upernet_swin_B_bs16_160k.yaml": {
        **SWIN,
        "MODEL.SWIN.EMBED_DIM": 128,
        "MODEL.SWIN.DEPTHS": [2, 2, 18, 2],
        "MODEL.SWIN.NUM_HEADS": [4, 8, 16, 32],
        "MODEL.BACKBONE.PRETRAINED": SWIN_URL + "base_patch4_window7_224_20220317-e9b98025.pth",
    },
}


def _load(name: str):
    cfg = get_cfg()
    cfg.merge_from_file(str(ADE / name))
    return cfg


def _value(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return list(node) if isinstance(node, tuple) else node


# Configs that evaluate CSAIL's converted checkpoints: (encoder, decoder) of each
CSAIL_CONFIGS = {
    "csail_upernet50.yaml": ("resnet50", "upernet"),
    "csail_pspnet50.yaml": ("resnet50dilated", "ppm_deepsup"),
}


def test_every_ade20k_recipe_is_listed():
    listed = sorted([*RECIPES, *CSAIL_CONFIGS])
    assert sorted(p.name for p in ADE.glob("*.yaml")) == listed


@pytest.mark.parametrize("name", sorted(CSAIL_CONFIGS))
def test_csail_configs_build_the_converters_model(name):
    """Each CSAIL config holds every value of ``csail_config_overrides`` for its architecture."""
    cfg = _load(name)
    overrides = get_cfg()
    overrides.merge_from_list(csail_config_overrides(*CSAIL_CONFIGS[name], 150))
    keys = csail_config_overrides(*CSAIL_CONFIGS[name], 150)[::2]
    for key in keys:
        assert _value(cfg, key) == _value(overrides, key), key


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_carries_mmseg_values(name):
    cfg = _load(name)
    for key, expected in {**EVERY, **RECIPES[name]}.items():
        assert _value(cfg, key) == pytest.approx(expected), key


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_base_chain_is_at_most_three_deep(name):
    depth, path = 0, ADE / name
    while "_BASE_" in path.read_text():
        line = next(x for x in path.read_text().splitlines() if x.startswith("_BASE_"))
        path = (path.parent / line.split(":", 1)[1].strip().strip('"')).resolve()
        depth += 1
    assert path.parent == ROOT and 1 <= depth <= 3


TINY = {  # CPU-sized versions of the recipes' models (the loss normaliser is the recipe's own)
    "upernet_R50_bs16_160k.yaml": ["MODEL.RESNETS.DEPTH", 18],
    "pspnet_R50D8_bs16_160k.yaml": ["MODEL.RESNETS.DEPTH", 18],
    "semantic_fpn_R50_bs16_160k.yaml": ["MODEL.RESNETS.DEPTH", 18, "MODEL.FPN.OUT_CHANNELS", 16],
    "upernet_convnext_T_bs16_160k.yaml": ["MODEL.TIMM.NAME", "convnext_atto"],
    "upernet_swin_T_bs16_160k.yaml": [
        "MODEL.SWIN.EMBED_DIM", 16, "MODEL.SWIN.DEPTHS", [1, 1, 1, 1],
        "MODEL.SWIN.NUM_HEADS", [1, 1, 1, 1],
    ],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_recipe_trains_and_infers(name):
    cfg = _load(name)
    cfg.merge_from_list(
        [
            "MODEL.DEVICE", "cpu", "MODEL.BACKBONE.PRETRAINED", "",
            "MODEL.RESNETS.NORM", "BN", "MODEL.SEM_SEG_HEAD.NORM", "BN",
            "MODEL.SEM_SEG_HEAD.CONVS_DIM", 16, "MODEL.AUX_HEAD.CONVS_DIM", 8,
            "TEST.SLIDE_CROP_SIZE", [48, 48], "TEST.SLIDE_STRIDE", [32, 32],
            *TINY[name],
        ]
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg)
    gen = torch.Generator().manual_seed(0)
    batch = [
        {
            "image": torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=gen),
            "sem_seg": torch.randint(0, 150, (64, 64), generator=gen),
        }
        for _ in range(2)
    ]
    batch[0]["sem_seg"][:20] = 255
    losses = model.train()(batch)
    expected = {"loss_sem_seg", "loss_aux"} if cfg.MODEL.AUX_HEAD.ENABLED else {"loss_sem_seg"}
    assert set(losses) == expected and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    with torch.no_grad():
        outputs = model.eval()([{"image": batch[0]["image"][:, :45, :61]}])
    assert outputs[0]["sem_seg"].shape == (150, 45, 61)
