"""CSAIL's unified perceptual parsing model (CSAILVision/unifiedparsing, Broden+ UPerNet-50) ->
UnifiedPerceptualParser.

The source layout is written here from reading that repository (not from our converter):

- ``models/resnet.py`` ``resnet50`` wrapped in ``models.Resnet`` (no ``fc``): a deep-base stem
  ``conv1`` 3->64 (stride 2), ``conv2`` 64->64, ``conv3`` 64->128 with ``bn1..3``, then
  Bottleneck layers of 3, 4, 6, 3 blocks (widths 64..512, expansion 4, the first reading 128
  channels; block 0 of each layer has a ``downsample`` conv + BN);
- ``models/models.py`` ``UPerNet(fc_dim=2048, fpn_dim=512)``: ``ppm_conv.{i}`` (1x1 conv, BN,
  ReLU), ``ppm_last_conv`` / ``conv_fusion`` (``conv3x3_bn_relu``), ``fpn_in.{i}`` (1x1 conv,
  BN, ReLU), ``fpn_out.{i}.0`` (a ``conv3x3_bn_relu`` in a Sequential), ``scene_head``
  (conv3x3_bn_relu, AdaptiveAvgPool2d, 1x1 conv), ``object_head`` / ``part_head`` /
  ``material_head`` (conv3x3_bn_relu, 1x1 conv), with Broden+'s class counts (object 336, part
  427, scene 365, material 26: ``meta_file/joint_dataset/*.csv``, background included);
- every norm a ``SynchronizedBatchNorm2d`` (``lib/nn/modules/batchnorm.py``): weight, bias,
  running_mean, running_var, num_batches_tracked and the accumulators ``_tmp_running_mean``,
  ``_tmp_running_var``, ``_running_iter``.

The numerical test re-implements CSAIL's encoder and decoder forward (``Resnet.forward``,
``UPerNet.forward``) functionally on those state dicts, with PrRoIPool ported from the CUDA
kernel's per-cell formula (``prroi_pooling_gpu_impl.cu``), and compares with our converted parser.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _tools import load_tool

from uper_parsing.checkpoint import choose_weights_format, read_checkpoint_metadata
from uper_parsing.checkpoint.csail_upp import convert_csail_upp_state_dicts
from uper_parsing.checkpoint.formats import WeightsFile, convert_weights_file
from uper_parsing.config import get_cfg
from uper_parsing.data import MetadataCatalog
from uper_parsing.data.datasets.broden_plus_categories import (
    BRODEN_PLUS_OBJECT_PARTS,
    broden_plus_metadata,
)
from uper_parsing.modeling import build_model
from uper_parsing.tasks import configure_model

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs/broden/csail_upp_upernet50.yaml")
NUM = {"object": 336, "part": 427, "scene": 365, "material": 26}  # CSAIL's channels
FPN_DIM, FC_DIM = 512, 2048
CAFFE_MEAN = [102.9801, 115.9465, 122.7717]
SIZES = [(64, 96), (96, 64)]  # multiples of 32 (our padding = CSAIL's rounding); res5 2x3, 3x2
SYNC_BN_EXTRA = ("num_batches_tracked", "_tmp_running_mean", "_tmp_running_var", "_running_iter")


# ----------------------------------------------------------------------------- CSAIL's layout


def _norm(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    """A SynchronizedBatchNorm2d's tensors (PyTorch >= 0.4.1 adds num_batches_tracked)."""
    per_channel = ("weight", "bias", "running_mean", "running_var")
    shapes = {f"{prefix}.{p}": (channels,) for p in per_channel + SYNC_BN_EXTRA[1:3]}
    shapes.update({f"{prefix}.num_batches_tracked": (), f"{prefix}._running_iter": (1,)})
    return shapes


def _conv_bn(prefix: str, c_in: int, c_out: int, k: int) -> dict[str, tuple[int, ...]]:
    """A Sequential(conv without bias, SynchronizedBatchNorm2d, ReLU) under ``prefix``."""
    return {f"{prefix}.0.weight": (c_out, c_in, k, k), **_norm(f"{prefix}.1", c_out)}


def csail_encoder_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {}
    for i, (c_in, c_out) in enumerate([(3, 64), (64, 64), (64, 128)], start=1):
        shapes[f"conv{i}.weight"] = (c_out, c_in, 3, 3)
        shapes.update(_norm(f"bn{i}", c_out))
    inplanes = 128
    for layer, (blocks, planes) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        for b in range(blocks):
            p = f"layer{layer}.{b}"
            shapes[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
            shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            shapes[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            for k, c in ((1, planes), (2, planes), (3, planes * 4)):
                shapes.update(_norm(f"{p}.bn{k}", c))
            if b == 0:
                shapes[f"{p}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                shapes.update(_norm(f"{p}.downsample.1", planes * 4))
            inplanes = planes * 4
    return shapes


def csail_decoder_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {}
    for i in range(4):
        shapes.update(_conv_bn(f"ppm_conv.{i}", FC_DIM, 512, 1))
    shapes.update(_conv_bn("ppm_last_conv", FC_DIM + 4 * 512, FPN_DIM, 3))
    for i, c_in in enumerate((256, 512, 1024)):
        shapes.update(_conv_bn(f"fpn_in.{i}", c_in, FPN_DIM, 1))
        shapes.update(_conv_bn(f"fpn_out.{i}.0", FPN_DIM, FPN_DIM, 3))
    shapes.update(_conv_bn("conv_fusion", 4 * FPN_DIM, FPN_DIM, 3))
    shapes.update(_conv_bn("scene_head.0", FPN_DIM, FPN_DIM, 3))
    shapes.update({"scene_head.2.weight": (NUM["scene"], FPN_DIM, 1, 1)})
    shapes.update({"scene_head.2.bias": (NUM["scene"],)})
    for task in ("object", "part", "material"):
        shapes.update(_conv_bn(f"{task}_head.0", FPN_DIM, FPN_DIM, 3))
        shapes[f"{task}_head.1.weight"] = (NUM[task], FPN_DIM, 1, 1)
        shapes[f"{task}_head.1.bias"] = (NUM[task],)
    return shapes


def _random_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Random tensors that keep activations O(1): convs N(0, 1 / fan_in), BN affines near 1 / 0,
    running variances in [0.5, 1.5]."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000)
        elif len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=g) / math.sqrt(fan_in)
        elif key.endswith(("running_var", "_running_iter")):
            state[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith(".weight"):
            state[key] = torch.rand(shape, generator=g) * 0.5 + 0.5
        else:  # BN bias / mean, classifier bias
            state[key] = torch.randn(shape, generator=g) * 0.1
    return state


@pytest.fixture(scope="module")
def csail_files() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    return _random_state(csail_encoder_shapes(), 0), _random_state(csail_decoder_shapes(), 1)


@pytest.fixture(scope="module")
def parser():
    """Our parser from the config, sized by the packaged Broden+ metadata (no dataset)."""
    name = "_test_csail_upp_broden_plus"
    MetadataCatalog.get(name).set(**broden_plus_metadata())
    cfg = get_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.MODEL.DEVICE = "cpu"
    cfg.DATASETS.TRAIN = (name,)
    configure_model(cfg)  # set-up: the class counts from the metadata
    model = build_model(cfg).eval()
    yield model
    MetadataCatalog.remove(name)


# ----------------------------------------------------------------------------- conversion


def test_every_csail_tensor_is_used_and_the_parser_is_filled_strictly(csail_files, parser):
    encoder, decoder = csail_files
    sources = {f"encoder.{k}" for k in encoder} | {f"decoder.{k}" for k in decoder}
    conversion = convert_csail_upp_state_dicts(encoder, decoder)
    assert set(conversion.renamed) | set(conversion.ignored) == sources
    assert not set(conversion.renamed) & set(conversion.ignored)
    assert all(k.endswith(SYNC_BN_EXTRA) for k in conversion.ignored)  # bookkeeping only
    assert not any(k.endswith(SYNC_BN_EXTRA[1:]) for k in conversion.renamed)
    parser.load_state_dict(conversion.state_dict, strict=True)
    unfilled = set(parser.state_dict()) - set(conversion.state_dict)
    assert all(k.endswith("num_batches_tracked") for k in unfilled)  # counters torch fills
    assert conversion.metadata == broden_plus_metadata()


def test_classifier_rows_drop_channel_zero_and_scene_becomes_linear(csail_files):
    encoder, decoder = csail_files
    conversion = convert_csail_upp_state_dicts(encoder, decoder)
    state = conversion.state_dict
    for task in ("object", "material"):  # CSAIL's untrained background row 0 dropped
        for p in ("weight", "bias"):
            torch.testing.assert_close(
                state[f"heads.{task}.classifier.{p}"], decoder[f"{task}_head.1.{p}"][1:]
            )
            assert "row 0 ('-')" in conversion.edited[f"heads.{task}.classifier.{p}"]
    # Broden+'s object_part_hierarchy rows follow the object order: parts keep CSAIL's order
    torch.testing.assert_close(state["heads.part.classifier.weight"], decoder["part_head.1.weight"])
    assert "heads.part.classifier.weight" not in conversion.edited
    torch.testing.assert_close(
        state["heads.scene.classifier.weight"], decoder["scene_head.2.weight"][:, :, 0, 0]
    )
    assert "(K, C)" in conversion.edited["heads.scene.classifier.weight"]
    renamed = {new: old for old, new in conversion.renamed.items()}
    for key, tensor in state.items():  # every other tensor is its source as it is
        if key not in conversion.edited:
            part, name = renamed[key].split(".", 1)
            assert torch.equal(tensor, (encoder if part == "encoder" else decoder)[name]), key


def test_part_rows_follow_the_metadata_order_of_parts():
    """A metadata that lists each object's real parts in reverse ("-" first still): our part p
    must take CSAIL's channel of the same "<object>/<part>"."""
    meta = broden_plus_metadata()
    part_classes, object_parts, new_id = [], [], {}
    for parts in meta["object_parts"]:
        order = parts[:1] + parts[1:][::-1]
        object_parts.append(list(range(len(part_classes), len(part_classes) + len(order))))
        for old in order:
            new_id[old] = len(part_classes)
            part_classes.append(meta["part_classes"][old])
    meta.update(part_classes=part_classes, object_parts=object_parts)
    weight = torch.arange(NUM["part"], dtype=torch.float32)[:, None, None, None].expand(-1, 2, 1, 1)
    decoder = {"part_head.1.weight": weight, "part_head.1.bias": weight[:, 0, 0, 0].clone()}
    conversion = convert_csail_upp_state_dicts({}, decoder, metadata=meta)
    converted = conversion.state_dict["heads.part.classifier.bias"]
    expected = torch.empty(NUM["part"])
    for old, new in new_id.items():  # packaged ids = CSAIL's channel order
        expected[new] = old
    torch.testing.assert_close(converted, expected)
    assert "reordered" in conversion.edited["heads.part.classifier.bias"]
    assert conversion.state_dict["heads.part.classifier.weight"].shape == (NUM["part"], 2, 1, 1)


def test_class_mismatches_are_errors_that_name_them():
    meta = broden_plus_metadata()
    meta["material_classes"] = [*meta["material_classes"][:-1], "unobtainium"]
    decoder = {"material_head.1.weight": torch.zeros(NUM["material"], 2, 1, 1)}
    decoder["material_head.1.bias"] = torch.zeros(NUM["material"])
    with pytest.raises(ValueError, match="unobtainium"):
        convert_csail_upp_state_dicts({}, decoder, metadata=meta)
    decoder = {"object_head.1.weight": torch.zeros(151, 2, 1, 1)}
    decoder["object_head.1.bias"] = torch.zeros(151)
    with pytest.raises(ValueError, match="object_head has 151 channels"):
        convert_csail_upp_state_dicts({}, decoder)
    with pytest.raises(ValueError, match="texture_head"):
        convert_csail_upp_state_dicts({}, {"texture_head.1.weight": torch.zeros(1)})


def _classifiers_only(channels: int = 2) -> dict[str, torch.Tensor]:
    decoder = {}
    for task, key in (("object", "1"), ("part", "1"), ("material", "1"), ("scene", "2")):
        decoder[f"{task}_head.{key}.weight"] = torch.randn(NUM[task], channels, 1, 1)
        decoder[f"{task}_head.{key}.bias"] = torch.randn(NUM[task])
    return decoder


def test_auto_detection_prefers_csail_upp_over_csail_for_a_segmentation_module():
    state = {"encoder.conv3.weight": torch.zeros(128, 64, 3, 3)}
    state.update({f"decoder.{k}": v for k, v in _classifiers_only().items()})
    state["decoder.ppm_conv.0.0.weight"] = torch.zeros(512, 2048, 1, 1)  # csail's marker too
    file = WeightsFile("segmentation_module.pth", state, {})
    assert choose_weights_format(file) == "csail-upp"
    conversion = convert_weights_file(file, "csail-upp")
    assert conversion.renamed["encoder.conv3.weight"] == "backbone.stem.conv3.weight"
    assert conversion.renamed["decoder.ppm_conv.0.0.weight"] == "trunk.ppm.branches.0.1.conv.weight"


def _tool():
    return load_tool("convert_weights")


@pytest.mark.parametrize("extension", [".pth", ".safetensors"])
def test_tool_writes_the_broden_plus_metadata(tmp_path, extension):
    tool = _tool()
    torch.save({"conv1.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "encoder_epoch_40.pth")
    torch.save(_classifiers_only(), tmp_path / "decoder_epoch_40.pth")
    out = tmp_path / f"upp{extension}"
    args = ["--from", "csail-upp", str(tmp_path / "encoder_epoch_40.pth")]
    args += ["--decoder", str(tmp_path / "decoder_epoch_40.pth"), str(out)]
    assert tool.main(args) == 0
    assert read_checkpoint_metadata(str(out)) == broden_plus_metadata()
    assert read_checkpoint_metadata(str(tmp_path / "encoder_epoch_40.pth")) is None
    if extension == ".pth":
        record = torch.load(out, weights_only=True)["source"]
        assert record["codebase"] == "csail-upp"
        assert "heads.object.classifier.weight" in record["edited"]


def test_tool_checks_the_config_and_the_file_sizes_the_parser(csail_files, tmp_path):
    """With no dataset registered, the tool's --config-file check sizes the parser by the
    converted class lists, and so does a model built with MODEL.WEIGHTS = the written file."""
    encoder, decoder = csail_files
    torch.save(encoder, tmp_path / "encoder_epoch_40.pth")
    torch.save(decoder, tmp_path / "decoder_epoch_40.pth")
    out = tmp_path / "upernet50_csail_upp.safetensors"
    names = ["_test_csail_upp_tool", "_test_csail_upp_weights"]  # registered nowhere
    args = ["--from", "csail-upp", "--decoder", str(tmp_path / "decoder_epoch_40.pth")]
    args += ["--config-file", CONFIG, str(tmp_path / "encoder_epoch_40.pth"), str(out)]
    assert _tool().main([*args, "DATASETS.TRAIN", f"('{names[0]}',)"]) == 0
    cfg = get_cfg()
    cfg.merge_from_file(CONFIG)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", str(out)])
    cfg.merge_from_list(["DATASETS.TRAIN", f"('{names[1]}',)"])
    configure_model(cfg)  # set-up: the class counts from those stored in MODEL.WEIGHTS
    model = build_model(cfg)
    assert model.heads["part"].num_parts == NUM["part"]
    assert model.heads["object"].classifier.out_channels == NUM["object"] - 1
    for name in names:
        if name in MetadataCatalog:
            MetadataCatalog.remove(name)


# ----------------------------------------------------------------------------- CSAIL's forward


def _bn(x: torch.Tensor, s: dict, p: str) -> torch.Tensor:
    return F.batch_norm(
        x, s[f"{p}.running_mean"], s[f"{p}.running_var"], s[f"{p}.weight"], s[f"{p}.bias"]
    )


def _cbr(x: torch.Tensor, s: dict, p: str) -> torch.Tensor:
    """CSAIL's Sequential(conv (padding k // 2, no bias), BN, ReLU) ``p``.0 / ``p``.1."""
    weight = s[f"{p}.0.weight"]
    return F.relu(_bn(F.conv2d(x, weight, padding=weight.shape[-1] // 2), s, f"{p}.1"))


def _conv_then_bn(x: torch.Tensor, s: dict, conv: str, bn: str, stride: int = 1) -> torch.Tensor:
    weight = s[f"{conv}.weight"]
    return _bn(F.conv2d(x, weight, stride=stride, padding=weight.shape[-1] // 2), s, bn)


def csail_encoder(x: torch.Tensor, s: dict) -> list[torch.Tensor]:
    """``Resnet.forward(return_feature_maps=True)``: [layer1, layer2, layer3, layer4]."""
    for i, stride in ((1, 2), (2, 1), (3, 1)):
        x = F.relu(_conv_then_bn(x, s, f"conv{i}", f"bn{i}", stride))
    x = F.max_pool2d(x, 3, stride=2, padding=1)
    out = []
    for layer, (blocks, stride) in enumerate(zip((3, 4, 6, 3), (1, 2, 2, 2)), start=1):
        for b in range(blocks):
            p, st = f"layer{layer}.{b}", stride if b == 0 else 1
            y = F.relu(_conv_then_bn(x, s, f"{p}.conv1", f"{p}.bn1"))
            y = F.relu(_conv_then_bn(y, s, f"{p}.conv2", f"{p}.bn2", st))  # stride in the 3x3
            y = _conv_then_bn(y, s, f"{p}.conv3", f"{p}.bn3")
            if b == 0:
                x = _conv_then_bn(x, s, f"{p}.downsample.0", f"{p}.downsample.1", st)
            x = F.relu(y + x)
        out.append(x)
    return out


def _cell_integral(lo: float, hi: float) -> float:
    """The kernel's ``(lim - lim^2 / 2) - (a - a^2 / 2)``: integral over [lo, hi] of 1 - t."""
    return (hi - 0.5 * hi * hi) - (lo - 0.5 * lo * lo)


def prroi_pool_cuda_port(data: torch.Tensor, bins: int) -> torch.Tensor:
    """``PrRoIPoolingForward`` for the RoI (0, 0, W, H), spatial scale 1: per bin, over the
    integer cells the window overlaps, the four corner pixels (zero outside the map) weighted
    by the kernel's per-cell integrals, divided by the bin area."""
    n, c, height, width = data.shape
    out = data.new_zeros(n, c, bins, bins)
    bin_h, bin_w = height / bins, width / bins
    for ph in range(bins):
        for pw in range(bins):
            y0, x0 = ph * bin_h, pw * bin_w
            y1, x1 = y0 + bin_h, x0 + bin_w
            total = data.new_zeros(n, c)
            for h in range(math.floor(y0), math.ceil(y1)):
                for w in range(math.floor(x0), math.ceil(x1)):
                    ya, yb = max(y0, h), min(y1, h + 1)
                    xa, xb = max(x0, w), min(x1, w + 1)
                    for hh, ly, hy in ((h, ya - h, yb - h), (h + 1, h + 1 - yb, h + 1 - ya)):
                        for ww, lx, hx in ((w, xa - w, xb - w), (w + 1, w + 1 - xb, w + 1 - xa)):
                            if 0 <= hh < height and 0 <= ww < width:
                                coeff = _cell_integral(ly, hy) * _cell_integral(lx, hx)
                                total = total + data[:, :, hh, ww] * coeff
            out[:, :, ph, pw] = total / (bin_h * bin_w)
    return out


def csail_decoder(conv_out: list[torch.Tensor], s: dict, seg_size) -> dict[str, torch.Tensor]:
    """``UPerNet.forward`` up to the classifiers' logits (object / part / material resized to
    ``seg_size``, scene (N, K))."""

    def up(x, size):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    conv5 = conv_out[-1]
    ppm = [conv5]
    for i, scale in enumerate((1, 2, 3, 6)):  # each bin convolved after upsampling
        pooled = up(prroi_pool_cuda_port(conv5, scale), conv5.shape[2:])
        ppm.append(_cbr(pooled, s, f"ppm_conv.{i}"))
    f = _cbr(torch.cat(ppm, 1), s, "ppm_last_conv")
    scene = _cbr(f, s, "scene_head.0").mean(dim=(2, 3), keepdim=True)
    scene = F.conv2d(scene, s["scene_head.2.weight"], s["scene_head.2.bias"])[:, :, 0, 0]
    fpn = [f]
    for i in reversed(range(3)):
        lateral = _cbr(conv_out[i], s, f"fpn_in.{i}")
        f = up(f, lateral.shape[2:]) + lateral
        fpn.append(_cbr(f, s, f"fpn_out.{i}.0"))
    fpn.reverse()
    out = {"scene": scene}

    def head(x, task):
        y = _cbr(x, s, f"{task}_head.0")
        return up(F.conv2d(y, s[f"{task}_head.1.weight"], s[f"{task}_head.1.bias"]), seg_size)

    out["material"] = head(fpn[0], "material")
    fused = _cbr(torch.cat([up(x, fpn[0].shape[2:]) for x in fpn], 1), s, "conv_fusion")
    out["object"], out["part"] = head(fused, "object"), head(fused, "part")
    return out


def csail_part_probabilities(part_logits: torch.Tensor) -> torch.Tensor:
    """CSAIL's inference: a softmax over each object's part list, concatenated (N, 427, H, W)."""
    groups, start = [], 0
    for _, parts in BRODEN_PLUS_OBJECT_PARTS:
        groups.append(part_logits[:, start : start + len(parts)].softmax(dim=1))
        start += len(parts)
    return torch.cat(groups, 1)


def _close(ours: torch.Tensor, reference: torch.Tensor, what: str) -> None:
    scale = reference.abs().max().item()
    error = (ours - reference).abs().max().item()
    assert error <= 1e-4 * max(scale, 1.0), f"{what}: max |diff| {error} (scale {scale})"


@pytest.mark.parametrize("size", SIZES)
def test_converted_parser_reproduces_csail_forward(csail_files, parser, size):
    encoder, decoder = csail_files
    parser.load_state_dict(convert_csail_upp_state_dicts(encoder, decoder).state_dict)
    image = torch.randint(0, 256, (3, *size), generator=torch.Generator().manual_seed(5))
    x = (image.float() - torch.tensor(CAFFE_MEAN)[:, None, None])[None]  # BGR, std 1
    with torch.no_grad():
        reference = csail_decoder(csail_encoder(x, encoder), decoder, size)
        (ours,) = parser([{"image": image.to(torch.uint8), "height": size[0], "width": size[1]}])
    _close(ours["object"], reference["object"][0, 1:], "object logits (channel 0 dropped)")
    _close(ours["material"], reference["material"][0, 1:], "material logits")
    _close(ours["scene"], reference["scene"][0], "scene logits")
    _close(ours["part"], csail_part_probabilities(reference["part"])[0], "part probabilities")
    assert set(ours) == {"object", "part", "material", "scene"}
