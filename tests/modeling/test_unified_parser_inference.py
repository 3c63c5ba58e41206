"""UnifiedPerceptualParser under ``TEST.MODE slide`` and multi-scale + flip TTA: the shared
``modeling.inference`` path gives the same outputs as whole-image inference where it must."""

import pytest
import torch

from uper_parsing.data import MetadataCatalog
from uper_parsing.modeling import InferenceSettings, build_model
from uper_parsing.tasks import configure_model

OBJECT_PARTS = [[], [0, 1, 2], [3, 4]]  # object 1 owns "-", x, y; object 2 owns "-", x
NUM = {"object": 3, "part": 5, "material": 4, "scene": 3, "texture": 6}
MAPS, VECTORS = ("object", "part", "material"), ("scene", "texture")


@pytest.fixture
def parser_cfg(tiny_cfg):
    """Factory: ``parser_cfg(*overrides)`` -> CfgNode of a tiny ResNet-18 parser (all tasks)."""
    name = "_test_unified_parser_inference_train"
    MetadataCatalog.get(name).set(
        object_classes=["a", "b", "c"],
        part_classes=["b/-", "b/x", "b/y", "c/-", "c/x"],
        object_parts=OBJECT_PARTS,
        material_classes=[f"m{i}" for i in range(NUM["material"])],
        scene_classes=[f"s{i}" for i in range(NUM["scene"])],
        texture_classes=[f"t{i}" for i in range(NUM["texture"])],
        ignore_label=255,
    )

    def make(*overrides):
        cfg = tiny_cfg()
        cfg.MODEL.META_ARCHITECTURE = "UnifiedPerceptualParser"
        cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM = 16
        cfg.MODEL.SEM_SEG_HEAD.POOL_SCALES = [1, 2]
        cfg.MODEL.MULTITASK.TEXTURE_CONVS_DIM = 8
        cfg.MODEL.MULTITASK.TEXTURE_NUM_CONVS = 1
        cfg.DATASETS.TRAIN = (name,)
        cfg.merge_from_list(list(overrides))
        configure_model(cfg, check=False)  # set-up: the class counts from the metadata
        return cfg

    yield make
    MetadataCatalog.remove(name)


def _build(cfg) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(cfg).eval()


def _inputs(sizes=((45, 61), (37, 53)), outputs=((30, 40), (37, 53))) -> list[dict]:
    gen = torch.Generator().manual_seed(1)
    return [
        {"image": torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen),
         "height": out_h, "width": out_w}
        for (h, w), (out_h, out_w) in zip(sizes, outputs)
    ]  # fmt: skip


def _run(model, inputs, cfg=None) -> list[dict]:
    if cfg is not None:
        model.inference = InferenceSettings.from_config(cfg)
    with torch.no_grad():
        return model(inputs)


def _assert_same(results, expected, vectors_as_log_softmax: bool) -> None:
    for result, reference in zip(results, expected, strict=True):
        assert set(result) == set(reference) == set(NUM)
        for task in MAPS:
            torch.testing.assert_close(result[task], reference[task], msg=task)
        for task in VECTORS:
            want = reference[task].log_softmax(0) if vectors_as_log_softmax else reference[task]
            torch.testing.assert_close(result[task], want, msg=task)


def test_slide_with_one_window_equals_whole_image_for_every_output(parser_cfg):
    """The batch is padded to 64x64: one 64x64 window is the whole (padded) image. Scene and
    texture come back as the log of their (one window's) class probabilities."""
    model = _build(parser_cfg())
    inputs = _inputs()
    whole = _run(model, inputs)
    slide = ["TEST.MODE", "slide", "TEST.SLIDE_CROP_SIZE", [64, 64], "TEST.SLIDE_STRIDE", [64, 64]]
    _assert_same(_run(model, inputs, parser_cfg(*slide)), whole, vectors_as_log_softmax=True)


def _symmetrise(model: torch.nn.Module) -> torch.nn.Module:
    """Every conv kernel made left-right symmetric: the model commutes with horizontal flips
    on widths that stay odd at every stride-2 step (2^k + 1) and without padding."""
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 4:
                param.copy_((param + param.flip(-1)) / 2)
    return model


def test_flip_tta_of_a_symmetric_model_equals_single_inference(parser_cfg):
    unpadded = ["TEST.PAD_TO_DIVISIBILITY", False]
    model = _symmetrise(_build(parser_cfg(*unpadded)))
    inputs = _inputs(sizes=((45, 65), (38, 33)), outputs=((45, 65), (20, 30)))
    single = _run(model, inputs)
    flipped = _run(model, [{**x, "image": x["image"].flip(-1)} for x in inputs[:1]])[0]
    for task in MAPS:  # the model is symmetric, the image is not
        torch.testing.assert_close(flipped[task], single[0][task].flip(-1), msg=task)
        assert not torch.allclose(single[0][task], single[0][task].flip(-1), atol=1e-3), task
    tta = ["TEST.AUG.ENABLED", True, "TEST.AUG.SCALES", [1.0], "TEST.AUG.FLIP", True]
    results = _run(model, inputs, parser_cfg(*unpadded, *tta))
    _assert_same(results, single, vectors_as_log_softmax=True)


@pytest.mark.parametrize(
    "overrides",
    [
        ["TEST.AUG.ENABLED", True, "TEST.AUG.SCALES", [0.75, 1.25], "TEST.AUG.FLIP", True],
        [
            "TEST.MODE",
            "slide",
            "TEST.SLIDE_CROP_SIZE",
            [32, 32],
            "TEST.SLIDE_STRIDE",
            [24, 24],
            "TEST.AUG.ENABLED",
            True,
            "TEST.AUG.SCALES",
            [1.0],
            "TEST.AUG.FLIP",
            True,
        ],
    ],  # fmt: skip
)
def test_tta_outputs_have_each_tasks_shape_and_kind(parser_cfg, overrides):
    """Maps at the requested size (object / material logits, part probabilities per object),
    scene / texture (K,) logits whose softmax is the averaged class probabilities."""
    model = _build(parser_cfg())
    inputs = _inputs()
    results = _run(model, inputs, parser_cfg(*overrides))
    for result, x in zip(results, inputs):
        h, w = x["height"], x["width"]
        assert set(result) == set(NUM)
        for task in MAPS:
            assert result[task].shape == (NUM[task], h, w) and result[task].isfinite().all()
        for parts in OBJECT_PARTS[1:]:
            torch.testing.assert_close(result["part"][parts].sum(0), torch.ones(h, w))
        for task in VECTORS:
            assert result[task].shape == (NUM[task],) and result[task].isfinite().all()
            torch.testing.assert_close(result[task].exp().sum(), torch.tensor(1.0))
        assert (result["object"].exp().sum(0) - 1).abs().max() > 1e-3  # logits, not probabilities
