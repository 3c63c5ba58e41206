"""Config keys a model, optimizer or schedule would silently ignore are rejected by name when set;
defaults (and every shipped config) never raise."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import uper_parsing.modeling  # noqa: F401  (registers the meta-architectures)
from uper_parsing.config import get_cfg, unsupported_key_errors
from uper_parsing.modeling.meta_arch import META_ARCH_REGISTRY, build_model
from uper_parsing.solver import build_lr_scheduler, build_optimizer

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml"))
ARCHS = ("SemanticSegmentor", "PanopticFPN", "UnifiedPerceptualParser")


def _cfg(arch: str, *overrides):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = arch
    cfg.merge_from_list(list(overrides))
    return cfg


def test_the_message_names_key_value_model_and_fix():
    cfg = _cfg("PanopticFPN", "TEST.AUG.ENABLED", True)
    with pytest.raises(ValueError) as err:
        build_model(cfg)
    assert str(err.value) == (
        "TEST.AUG.ENABLED is True but PanopticFPN does not support test-time augmentation; "
        "set TEST.AUG.ENABLED False (the default)"
    )


@pytest.mark.parametrize(
    ("arch", "key", "value", "feature"),
    [
        ("PanopticFPN", "TEST.MODE", "slide", "sliding-window inference"),
        ("PanopticFPN", "TEST.PAD_TO_DIVISIBILITY", False, "unpadded inference"),
        ("PanopticFPN", "MODEL.AUX_HEAD.ENABLED", True, "an auxiliary head"),
        ("PanopticFPN", "MODEL.MULTITASK.TEXTURE_PHASE_ITERS", 3, "unified perceptual parsing"),
        ("SemanticSegmentor", "MODEL.RPN.NMS_THRESH", 0.6, "an instance branch"),
        ("SemanticSegmentor", "MODEL.ROI_HEADS.NUM_CLASSES", 3, "an instance branch"),
        ("SemanticSegmentor", "MODEL.ANCHOR_GENERATOR.OFFSET", 0.5, "an instance branch"),
        ("SemanticSegmentor", "MODEL.PANOPTIC_FPN.COMBINE.ENABLED", False, "an instance branch"),
        ("SemanticSegmentor", "MODEL.MULTITASK.TASKS", ["object"], "unified perceptual parsing"),
        ("UnifiedPerceptualParser", "MODEL.AUX_HEAD.ENABLED", True, "an auxiliary head"),
        ("UnifiedPerceptualParser", "MODEL.ROI_MASK_HEAD.NUM_CONV", 2, "an instance branch"),
        ("UnifiedPerceptualParser", "MODEL.SEM_SEG_HEAD.NAME", "PSPHead", "another trunk"),
        ("UnifiedPerceptualParser", "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT", 0.5, "loss weight"),
        ("UnifiedPerceptualParser", "MODEL.SEM_SEG_HEAD.CLASS_WEIGHTS", [1.0], "class weights"),
        ("UnifiedPerceptualParser", "MODEL.SEM_SEG_HEAD.LOSS_AVG_NON_IGNORE", False, "ignored"),
        ("UnifiedPerceptualParser", "MODEL.SEM_SEG_HEAD.IGNORE_VALUE", 0, "ignore value"),
        ("UnifiedPerceptualParser", "MODEL.SEM_SEG_HEAD.COMMON_STRIDE", 8, "head stride"),
        ("UnifiedPerceptualParser", "MODEL.SEM_SEG_HEAD.NUM_CONVS", 1, "FCN head"),
    ],
)
def test_model_rejects_a_key_it_would_ignore(arch, key, value, feature):
    with pytest.raises(ValueError, match=rf"^{key} is .* but {arch} does not support .*{feature}"):
        build_model(_cfg(arch, key, value))


def test_each_key_is_honoured_by_some_model_or_component():
    """The switches rejected above work where they are supported: no error from the check."""
    honoured = {
        "SemanticSegmentor": ["TEST.AUG.ENABLED", True, "MODEL.AUX_HEAD.ENABLED", True],
        "UnifiedPerceptualParser": ["TEST.MODE", "slide", "TEST.PAD_TO_DIVISIBILITY", False],
        "PanopticFPN": ["MODEL.RPN.NMS_THRESH", 0.6, "MODEL.SEM_SEG_HEAD.NAME", "PSPHead"],
    }
    for arch, overrides in honoured.items():
        keys = META_ARCH_REGISTRY.get(arch).unsupported_keys
        assert unsupported_key_errors(_cfg(arch, *overrides), arch, keys) == []


def test_several_rejected_keys_are_counted():
    cfg = _cfg("SemanticSegmentor", "MODEL.RPN.NMS_THRESH", 0.6, "MODEL.ROI_HEADS.NUM_CLASSES", 3)
    with pytest.raises(ValueError, match=r"MODEL.RPN.NMS_THRESH is 0.6 .*\(1 more such key\)$"):
        build_model(cfg)


@pytest.mark.parametrize("arch", ARCHS)
def test_defaults_never_raise(arch):
    keys = META_ARCH_REGISTRY.get(arch).unsupported_keys
    assert unsupported_key_errors(_cfg(arch), arch, keys) == []
    cfg = _cfg(arch, "MODEL.ANCHOR_GENERATOR.SIZES", ((32,), (64,), (128,), (256,), (512,)))
    assert unsupported_key_errors(cfg, arch, keys) == []  # tuples equal to the default lists


@pytest.mark.parametrize(
    ("solver", "message"),
    [
        (["SOLVER.OPTIMIZER", "SGD", "SOLVER.BETAS", [0.8, 0.95]], "SOLVER.BETAS is [0.8, 0.95] "
         "but SOLVER.OPTIMIZER 'SGD' does not support Adam's betas"),
        (["SOLVER.OPTIMIZER", "AdamW", "SOLVER.MOMENTUM", 0.8], "SOLVER.MOMENTUM is 0.8 but "
         "SOLVER.OPTIMIZER 'AdamW' does not support SGD momentum"),
        (["SOLVER.OPTIMIZER", "AdamW", "SOLVER.NESTEROV", True], "SOLVER.NESTEROV is True but "
         "SOLVER.OPTIMIZER 'AdamW' does not support Nesterov momentum"),
    ],
)  # fmt: skip
def test_optimizer_rejects_the_other_optimizers_keys(solver, message):
    with pytest.raises(ValueError, match=f"^{message}".replace("[", r"\[").replace("]", r"\]")):
        build_optimizer(_cfg("SemanticSegmentor", *solver), nn.Linear(2, 2))


@pytest.mark.parametrize(
    ("schedule", "key", "value"),
    [
        ("WarmupCosineLR", "SOLVER.POLY_LR_POWER", 1.0),
        ("WarmupCosineLR", "SOLVER.GAMMA", 0.5),
        ("WarmupPolyLR", "SOLVER.GAMMA", 0.5),
        ("WarmupMultiStepLR", "SOLVER.POLY_LR_POWER", 1.0),
        ("WarmupMultiStepLR", "SOLVER.BASE_LR_END", 1e-4),
    ],
)
def test_schedule_rejects_the_other_schedules_keys(schedule, key, value):
    cfg = _cfg("SemanticSegmentor", "SOLVER.LR_SCHEDULER_NAME", schedule, key, value)
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)
    owner = f"SOLVER.LR_SCHEDULER_NAME '{schedule}'"
    with pytest.raises(ValueError, match=rf"^{key} is {value} but {owner} does not support"):
        build_lr_scheduler(cfg, optimizer)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_pass_every_check(config):
    cfg = get_cfg()
    cfg.merge_from_file(str(config))
    arch = cfg.MODEL.META_ARCHITECTURE
    keys = META_ARCH_REGISTRY.get(arch).unsupported_keys
    assert unsupported_key_errors(cfg, arch, keys) == []
    cfg.SOLVER.LAYER_DECAY.ENABLED = False  # layer ids need the recipe's backbone, not a Linear
    optimizer = build_optimizer(cfg, nn.Linear(2, 2))
    build_lr_scheduler(cfg, optimizer)
