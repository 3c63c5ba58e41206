"""Export of every exportable model (UPerNet, PSPNet, Semantic FPN, the unified perceptual parser,
Panoptic FPN's semantic branch) with dynamic sizes: traced at one size, run at two others (not
multiples of 32, one not of the sample's aspect) and compared with the eager model's own
inference; what does not export is refused by name; tools/export_model.py end to end.

Models are tiny (ResNet-18, 16-32 channel heads) with random weights; their logits span a few
units (UPerNet +-7, PSPNet +-3, Semantic FPN +-17, Panoptic FPN +-20, the parser's object +-3,
scene +-2), so that argmax agreement means something."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from _tools import load_tool
from torch import nn

from uper_parsing.checkpoint import Checkpointer
from uper_parsing.config import get_cfg
from uper_parsing.data import MetadataCatalog
from uper_parsing.export import (
    ExportableAdaptiveAvgPool2d,
    NotExportableError,
    export_onnx,
    export_torchscript,
    exportable_model,
)
from uper_parsing.modeling import ResNet, UnifiedPerceptualParser, build_model
from uper_parsing.modeling.sem_seg_heads.ppm import PrRoIPool2d

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "configs" / "quickstart"
SAMPLE_HW = (100, 120)  # the size traced
SIZES = ((128, 160), (96, 224))  # the sizes run: neither the sample's nor its aspect
MIN_ARGMAX_AGREEMENT = 0.999

# Measured (float32, CPU, torch 2.15, onnxruntime 1.32): max |exported - eager| over the outputs,
# at 128x160 / 96x224, with argmax agreement 1.0 everywhere:
#   onnxruntime: UPerNet 7.2e-6 / 9.7e-6, PSPNet 9.5e-6 / 6.6e-6, Semantic FPN 3.7e-5 / 4.1e-5,
#   parser (avg) 3.4e-6 / 6.2e-6, parser (prroi) 3.6e-6 / 3.3e-6, Panoptic FPN semantic
#   5.9e-5 / 7.2e-5;
#   TorchScript: UPerNet 8.9e-6 / 9.5e-6, PSPNet 8.5e-6 / 7.3e-6, Semantic FPN 4.5e-5 / 6.1e-5,
#   parser (avg) 2.0e-6 / 2.2e-6, parser (prroi) 2.3e-6 / 1.8e-6, Panoptic FPN semantic
#   8.1e-5 / 8.4e-5.
# float32 rounding of reordered sums (the exported copy runs NCHW, the eager model channels-last
# as the quickstart configs set; other convolution kernels; pooling as matrix products): a few
# 1e-6 of the logits' range.
MAX_ABS_DIFF = 1e-3


def _from_config(config: str, *overrides: str) -> nn.Module:
    cfg = get_cfg()
    cfg.merge_from_file(str(QUICKSTART / config))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *overrides])
    torch.manual_seed(0)
    return build_model(cfg).eval()


def _parser(ppm_pool: str) -> nn.Module:
    torch.manual_seed(0)
    model = UnifiedPerceptualParser(
        backbone=ResNet(depth=18, norm="BN"),
        num_objects=3,
        object_parts=[[], [0, 1], [2, 3, 4]],
        num_materials=4,
        num_scenes=3,
        num_textures=6,
        convs_dim=16,
        dropout=0.0,
        texture_convs_dim=8,
        texture_num_convs=2,
        ppm_pool=ppm_pool,
        ppm_conv_after_upsample=ppm_pool == "prroi",  # CSAIL's checkpoint: both
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return model.eval()


TINY_SEMANTIC = ("MODEL.SEM_SEG_HEAD.CONVS_DIM", "16", "MODEL.AUX_HEAD.ENABLED", "False")
FPN_32 = ("MODEL.FPN.OUT_CHANNELS", "32", "MODEL.SEM_SEG_HEAD.CONVS_DIM", "32")  # GN: 32 groups
# name -> (builder, export semantic_only)
MODELS: dict[str, tuple[Callable[[], nn.Module], bool]] = {
    "upernet": (lambda: _from_config("upernet_R18_synthetic.yaml", *TINY_SEMANTIC), False),
    "pspnet": (lambda: _from_config("pspnet_R18D8_synthetic.yaml", *TINY_SEMANTIC), False),
    "semantic_fpn": (lambda: _from_config("semantic_fpn_R18_synthetic.yaml", *FPN_32), False),
    "parser_avg": (lambda: _parser("avg"), False),
    "parser_prroi": (lambda: _parser("prroi"), False),
    "panoptic_semantic": (lambda: _from_config("panoptic_fpn_R18_synthetic.yaml", *FPN_32), True),
}


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    """Tiny models gain nothing from intra-op threads on a busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def built():
    """``built(name)`` -> (model, wrapper), each built once per module."""
    cache: dict[str, tuple[nn.Module, nn.Module]] = {}

    def get(name: str) -> tuple[nn.Module, nn.Module]:
        if name not in cache:
            build, semantic_only = MODELS[name]
            model = build()
            cache[name] = model, exportable_model(model, semantic_only=semantic_only)
        return cache[name]

    return get


def _image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """Tensor (3, H, W) uint8 noise."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), dtype=torch.uint8, generator=gen)


def _eager(model: nn.Module, names: tuple[str, ...], image: torch.Tensor) -> list[torch.Tensor]:
    """The model's own inference on one image: its outputs named ``names``."""
    with torch.no_grad():
        outputs = model([{"image": image}])[0]
    return [outputs[name] for name in names]


def _as_list(outputs) -> list[torch.Tensor]:
    return [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)


def _differences(exported: list, eager: list[torch.Tensor]) -> tuple[float, float]:
    """(max abs difference, lowest argmax agreement) over the outputs of one image: exported
    (1, K, ...) arrays or tensors, eager (K, ...)."""
    worst, agreement = 0.0, 1.0
    for out, ref in zip(exported, eager):
        out = torch.as_tensor(np.asarray(out))[0]
        assert out.shape == ref.shape
        worst = max(worst, (out - ref).abs().max().item())
        agreement = min(agreement, (out.argmax(0) == ref.argmax(0)).float().mean().item())
    return worst, agreement


@pytest.mark.parametrize("name", sorted(MODELS))
def test_wrapper_computes_the_models_inference(built, name):
    """The wrapper (float input, exportable pooling, index crop) equals the model's inference."""
    model, wrapper = built(name)
    for hw in SIZES:
        image = _image(*hw)
        with torch.no_grad():
            outputs = _as_list(wrapper(image[None].float()))
        worst, agreement = _differences(outputs, _eager(model, wrapper.output_names, image))
        assert worst < MAX_ABS_DIFF and agreement == 1.0, (hw, worst, agreement)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_torchscript_traced_at_one_size_runs_at_others(built, name, tmp_path):
    model, wrapper = built(name)
    path = export_torchscript(wrapper, _image(*SAMPLE_HW)[None].float(), str(tmp_path / "m.pt"))
    traced = torch.jit.load(path)
    for seed, hw in enumerate(SIZES):
        image = _image(*hw, seed=seed + 1)
        with torch.no_grad():
            outputs = _as_list(traced(image[None].float()))
        worst, agreement = _differences(outputs, _eager(model, wrapper.output_names, image))
        print(f"torchscript {name} {hw}: max abs diff {worst:.2e}, argmax agreement {agreement}")
        assert worst < MAX_ABS_DIFF and agreement >= MIN_ARGMAX_AGREEMENT, (hw, worst, agreement)


@pytest.mark.slow(seconds=30)  # one ONNX export per model, 20-50 s each on 2 busy cores
@pytest.mark.parametrize("name", sorted(MODELS))
def test_onnx_matches_eager_at_two_other_sizes(built, name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    model, wrapper = built(name)
    path = export_onnx(wrapper, _image(*SAMPLE_HW)[None].float(), str(tmp_path / "m.onnx"))
    graph = onnx.load(path).graph
    assert [o.name for o in graph.output] == list(wrapper.output_names)
    dims = [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    assert graph.input[0].name == "images" and dims == ["batch", "", "height", "width"]
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for seed, hw in enumerate(SIZES):
        image = _image(*hw, seed=seed + 1)
        outputs = session.run(None, {"images": image[None].float().numpy()})
        worst, agreement = _differences(outputs, _eager(model, wrapper.output_names, image))
        print(f"onnx {name} {hw}: max abs diff {worst:.2e}, argmax agreement {agreement}")
        assert worst < MAX_ABS_DIFF and agreement >= MIN_ARGMAX_AGREEMENT, (hw, worst, agreement)
    batch = torch.stack([_image(*SIZES[1], seed=7), _image(*SIZES[1], seed=8)])
    outputs = session.run(None, {"images": batch.float().numpy()})
    for i in range(2):  # a batch of two: each image as alone
        second = [out[i : i + 1] for out in outputs]
        worst, _ = _differences(second, _eager(model, wrapper.output_names, batch[i]))
        assert worst < MAX_ABS_DIFF


def test_the_exported_copy_has_exportable_pools_and_the_model_keeps_its_own(built):
    model, wrapper = built("parser_prroi")
    assert any(isinstance(m, PrRoIPool2d) for m in model.modules())
    assert not any(isinstance(m, PrRoIPool2d) for m in wrapper.modules())
    model, wrapper = built("pspnet")
    assert sum(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.modules()) == 4
    assert sum(isinstance(m, ExportableAdaptiveAvgPool2d) for m in wrapper.modules()) == 4
    assert not any(isinstance(m, nn.AdaptiveAvgPool2d) for m in wrapper.modules())
    assert wrapper.model is not model and not wrapper.model.training


def test_output_names(built):
    assert built("upernet")[1].output_names == ("sem_seg",)
    assert built("panoptic_semantic")[1].output_names == ("sem_seg",)
    names = ("object", "part", "material", "scene", "texture")
    assert built("parser_avg")[1].output_names == names


def test_what_does_not_export_is_refused_by_name(built):
    panoptic = built("panoptic_semantic")[0]
    with pytest.raises(NotExportableError, match="RPN, RoI heads and panoptic merge.*semantic"):
        exportable_model(panoptic)
    with pytest.raises(NotExportableError, match="no single semantic branch"):
        exportable_model(built("parser_avg")[0], semantic_only=True)
    with pytest.raises(NotExportableError, match="Linear has no exportable form"):
        exportable_model(nn.Linear(2, 2))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (("TEST.MODE", "slide"), "TEST.MODE 'slide'"),
        (("TEST.AUG.ENABLED", "True"), "TEST.AUG.ENABLED True"),
    ],
)
def test_sliding_windows_and_test_time_augmentation_are_refused(overrides, message):
    model = _from_config("upernet_R18_synthetic.yaml", *TINY_SEMANTIC, *overrides)
    with pytest.raises(NotExportableError, match=message):
        exportable_model(model)


# ---------------------------------------------------------------------------------------------
# tools/export_model.py

UPERNET = str(QUICKSTART / "upernet_R18_synthetic.yaml")


@pytest.fixture(scope="module")
def tool():
    return load_tool("export_model")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(model, path): the tiny UPerNet of ``TINY_SEMANTIC``, saved by the project's
    Checkpointer."""
    model = _from_config("upernet_R18_synthetic.yaml", *TINY_SEMANTIC)
    folder = tmp_path_factory.mktemp("checkpoint")
    Checkpointer(model, str(folder)).save("model_final")
    return model, str(folder / "model_final.pth")


def test_arguments(tool):
    args = tool.parse_args(
        ["--config-file", "c.yaml", "--format", "onnx", "--output", "m.onnx", "A.B", "1",
         "--opts", "C.D", "2"]
    )  # fmt: skip
    assert args.opts == ["A.B", "1", "C.D", "2"] and (args.height, args.width) == (512, 512)
    base = ["--config-file", "c.yaml", "--output", "m"]
    for bad in (
        [*base, "--format", "onnx", "--sample-image", "x.png", "--height", "64"],
        [*base, "--format", "torchscript", "--opset", "17"],
        [*base, "--format", "tflite"],
        [*base, "--format", "onnx", "--width", "0"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            tool.parse_args(bad)
        assert exit_info.value.code == 2


def test_tool_torchscript_from_a_checkpoint_and_a_sample_image(tool, checkpoint, tmp_path):
    """In-process: --sample-image (read in INPUT.FORMAT order), --opts, MODEL.WEIGHTS loaded."""
    model, weights = checkpoint
    sample = tmp_path / "sample.png"
    cv2.imwrite(str(sample), _image(*SAMPLE_HW).permute(1, 2, 0).numpy())
    output = tmp_path / "out" / "upernet.pt"
    status = tool.main(
        ["--config-file", UPERNET, "--format", "torchscript", "--output", str(output),
         "--sample-image", str(sample), *TINY_SEMANTIC, "--opts", "MODEL.WEIGHTS", weights]
    )  # fmt: skip
    assert status == 0
    traced = torch.jit.load(str(output))
    for seed, hw in enumerate(SIZES):
        image = _image(*hw, seed=seed + 1)
        with torch.no_grad():
            worst, agreement = _differences(
                [traced(image[None].float())], _eager(model, ("sem_seg",), image)
            )
        assert worst < MAX_ABS_DIFF and agreement >= MIN_ARGMAX_AGREEMENT


def test_tool_sample_image_is_read_in_the_input_format(tool, tmp_path):
    bgr = np.zeros((4, 5, 3), np.uint8)
    bgr[..., 0] = 200  # blue
    cv2.imwrite(str(tmp_path / "blue.png"), bgr)
    args = tool.parse_args(
        ["--config-file", "c", "--format", "onnx", "--output", "o",
         "--sample-image", str(tmp_path / "blue.png")]
    )  # fmt: skip
    for input_format, channel in (("RGB", 2), ("BGR", 0)):
        cfg = get_cfg()
        cfg.INPUT.FORMAT = input_format
        sample = tool.sample_images(args, cfg)
        assert sample.shape == (1, 3, 4, 5) and sample.dtype == torch.float32
        assert sample[0, channel].eq(200).all() and sample.sum() == 200 * 20


def test_tool_exports_the_parser_of_a_config_with_prroi_pooling(tool, tmp_path):
    """The parser's class counts come from the config's registered metadata (as the predictor
    fills them); its PrRoIPool PPM traced at 70x90 runs at 45x61."""
    output = tmp_path / "parser.pt"
    status = tool.main(
        ["--config-file", str(QUICKSTART / "unified_parsing_R18_synthetic.yaml"),
         "--format", "torchscript", "--output", str(output), "--height", "70", "--width", "90",
         "MODEL.SEM_SEG_HEAD.CONVS_DIM", "16", "MODEL.SEM_SEG_HEAD.PPM_POOL", "prroi"]
    )  # fmt: skip
    assert status == 0
    with torch.no_grad():
        outputs = torch.jit.load(str(output))(torch.rand(2, 3, 45, 61) * 255)
    shapes = [tuple(x.shape) for x in outputs]
    assert len(shapes) == 5  # object, part, material, scene, texture
    assert all(s[0] == 2 and s[2:] == (45, 61) for s in shapes[:3])
    assert all(len(s) == 2 and s[0] == 2 for s in shapes[3:])
    object_parts = MetadataCatalog.get("synthetic_scenes_multitask_train").object_parts
    for parts in filter(None, object_parts):  # part probabilities: a softmax per object
        sums = outputs[1][:, list(parts)].sum(1)
        torch.testing.assert_close(sums, torch.ones_like(sums))


def test_tool_refuses_panoptic_fpn_without_semantic_only(tool, tmp_path, capsys):
    output = tmp_path / "panoptic.onnx"
    config = str(QUICKSTART / "panoptic_fpn_R18_synthetic.yaml")
    status = tool.main(["--config-file", config, "--format", "onnx", "--output", str(output)])
    assert status == 2 and not output.exists()
    error = capsys.readouterr().err
    assert "PanopticFPN: Panoptic FPN's RPN, RoI heads and panoptic merge do not export" in error
    assert "--semantic-only" in error


def test_tool_names_a_bad_config_key(tool, tmp_path, capsys):
    status = tool.main(
        ["--config-file", UPERNET, "--format", "onnx", "--output", str(tmp_path / "m.onnx"),
         "MODEL.NOT_A_KEY", "1"]
    )  # fmt: skip
    assert status == 2 and "MODEL.NOT_A_KEY" in capsys.readouterr().err


@pytest.mark.slow(seconds=60)  # a python process: imports, model build and an ONNX export
def test_tool_end_to_end_onnx(checkpoint, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    model, weights = checkpoint
    output = tmp_path / "upernet.onnx"
    command = [
        sys.executable, str(ROOT / "tools/export_model.py"), "--config-file", UPERNET,
        "--format", "onnx", "--output", str(output), "--height", "64", "--width", "80",
        *TINY_SEMANTIC, "MODEL.WEIGHTS", weights,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Wrote {output} (onnx)" in done.stdout + done.stderr
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    for seed, hw in enumerate(SIZES):
        image = _image(*hw, seed=seed + 1)
        outputs = session.run(None, {"images": image[None].float().numpy()})
        worst, agreement = _differences(outputs, _eager(model, ("sem_seg",), image))
        assert worst < MAX_ABS_DIFF and agreement >= MIN_ARGMAX_AGREEMENT, (hw, worst, agreement)
