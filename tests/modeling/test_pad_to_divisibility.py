"""TEST.PAD_TO_DIVISIBILITY False: each image alone at its own size, slide windows unpadded, as
mmseg 1.x tests (SegDataPreProcessor without test_cfg, batch 1; EncoderDecoder.slide_inference)."""

import pytest
import torch
import torch.nn.functional as F

from uper_parsing.layers import resize_to
from uper_parsing.modeling import build_model
from uper_parsing.modeling.inference import InferenceSettings, run_inference, slide_inference

K = 3


def _window_dependent(images: torch.Tensor) -> torch.Tensor:
    """Logits at stride 2 that depend on the whole window (its mean), so any change of the window
    (size, padding) changes them: Tensor (N, 3, h, w) -> (N, K, ceil(h / 2), ceil(w / 2))."""
    weight = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.2, -1.0], [-0.7, 1.5, 0.1]]).view(K, 3, 1, 1)
    pooled = F.avg_pool2d(images, 2, ceil_mode=True)
    return F.conv2d(pooled, weight) + images.mean(dim=(2, 3), keepdim=True)[:, :1]


def mmseg_slide_inference(encode_decode, inputs, *, crop_size, stride):
    """mmseg's EncoderDecoder.slide_inference: windows cut without padding, each one's logits
    (resized to the window by encode_decode) padded into place and summed, divided by the count."""
    h_stride, w_stride = stride
    h_crop, w_crop = crop_size
    batch_size, _, h_img, w_img = inputs.size()
    h_grids = max(h_img - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(w_img - w_crop + w_stride - 1, 0) // w_stride + 1
    preds = inputs.new_zeros((batch_size, K, h_img, w_img))
    count_mat = inputs.new_zeros((batch_size, 1, h_img, w_img))
    for h_idx in range(h_grids):
        for w_idx in range(w_grids):
            y1, x1 = h_idx * h_stride, w_idx * w_stride
            y2, x2 = min(y1 + h_crop, h_img), min(x1 + w_crop, w_img)
            y1, x1 = max(y2 - h_crop, 0), max(x2 - w_crop, 0)
            crop_seg_logit = encode_decode(inputs[:, :, y1:y2, x1:x2])
            preds += F.pad(crop_seg_logit, (x1, w_img - x2, y1, h_img - y2))
            count_mat[:, :, y1:y2, x1:x2] += 1
    assert (count_mat == 0).sum() == 0
    return preds / count_mat


def _encode_decode(crop: torch.Tensor) -> torch.Tensor:
    return F.interpolate(
        _window_dependent(crop), size=crop.shape[2:], mode="bilinear", align_corners=False
    )


@pytest.mark.parametrize(
    "crop, stride", [((16, 16), (11, 11)), ((64, 20), (50, 13)), ((64, 64), (32, 32))]
)
def test_unpadded_slide_equals_mmseg(crop, stride):
    images = torch.randn(1, 3, 45, 37, generator=torch.Generator().manual_seed(0))
    expected = mmseg_slide_inference(_encode_decode, images, crop_size=crop, stride=stride)
    ours = slide_inference(
        _window_dependent, images, crop_size=crop, stride=stride, pad_windows=False
    )
    torch.testing.assert_close(ours, expected, rtol=1e-6, atol=1e-6)
    if crop[0] > 45:  # a window larger than the image: padding it changes the result
        padded = slide_inference(_window_dependent, images, crop_size=crop, stride=stride)
        assert not torch.allclose(padded, expected, atol=1e-3)


def test_run_inference_without_padding_ignores_the_divisibility():
    shapes = []

    def record(images):
        shapes.append(tuple(images.shape[-2:]))
        return _window_dependent(images)

    images = torch.randn(1, 3, 45, 37)
    window = {"crop_size": (64, 64), "stride": (32, 32)}
    for mode in ("whole", "slide"):
        settings = InferenceSettings(mode=mode, pad_to_divisibility=False, **window)
        run_inference(record, images, settings, size_divisibility=32)
    for mode in ("whole", "slide"):
        run_inference(record, images, InferenceSettings(mode=mode, **window), size_divisibility=32)
    assert shapes == [(45, 37), (45, 37), (64, 64), (64, 64)]


def _recorded_model(cfg):
    model = build_model(cfg).eval()
    shapes, forward = [], model.backbone.forward

    def record(x):
        shapes.append(tuple(x.shape))
        return forward(x)

    model.backbone.forward = record
    return model, shapes


def test_model_runs_each_image_alone_at_its_own_size(tiny_cfg, batched_inputs):
    cfg = tiny_cfg("UPerNetHead")
    inputs = batched_inputs(with_labels=False)
    torch.manual_seed(0)
    padded, padded_shapes = _recorded_model(cfg)
    cfg.TEST.PAD_TO_DIVISIBILITY = False
    torch.manual_seed(0)
    model, shapes = _recorded_model(cfg)
    with torch.no_grad():
        outputs = model(inputs)
        padded(inputs)
    assert padded_shapes == [(2, 3, 64, 64)]
    assert shapes == [(1, 3, 45, 45), (1, 3, 61, 37)]
    for x, out in zip(inputs, outputs):
        image = (x["image"][None].float() - model.pixel_mean) / model.pixel_std
        with torch.no_grad():
            logits = resize_to(model.logits(image), image.shape[-2:])
        expected = resize_to(logits, (x["height"], x["width"]))[0]
        torch.testing.assert_close(out["sem_seg"], expected)


def test_model_slide_windows_are_unpadded(tiny_cfg, batched_inputs):
    cfg = tiny_cfg("UPerNetHead")
    cfg.merge_from_list(
        ["TEST.MODE", "slide", "TEST.SLIDE_CROP_SIZE", [48, 48], "TEST.SLIDE_STRIDE", [32, 32]]
    )
    cfg.TEST.PAD_TO_DIVISIBILITY = False
    model, shapes = _recorded_model(cfg)
    with torch.no_grad():
        outputs = model(batched_inputs(with_labels=False))
    # 45x45: one 45x45 window; 61x37: rows (0, 48) and (13, 61) of width 37
    assert shapes == [(1, 3, 45, 45), (1, 3, 48, 37), (1, 3, 48, 37)]
    assert [tuple(o["sem_seg"].shape[1:]) for o in outputs] == [(90, 90), (30, 20)]


def test_unpadded_images_of_one_size_run_together(tiny_cfg, batched_inputs):
    """Without padding, images of one size stack into one batch (no padding needed), the results
    in input order and equal to one-by-one inference."""
    cfg = tiny_cfg("UPerNetHead")
    cfg.TEST.PAD_TO_DIVISIBILITY = False
    torch.manual_seed(0)
    model, shapes = _recorded_model(cfg)
    a, b = batched_inputs(with_labels=False)  # 45x45 and 61x37
    inputs = [a, b, dict(a, image=a["image"].flip(-1)), b]
    with torch.no_grad():
        outputs = model(inputs)
        alone = [model([x])[0] for x in inputs]
    assert shapes[:2] == [(2, 3, 45, 45), (2, 3, 61, 37)]
    for out, ref in zip(outputs, alone):
        torch.testing.assert_close(out["sem_seg"], ref["sem_seg"], rtol=1e-5, atol=1e-5)
