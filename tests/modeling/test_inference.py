import pytest
import torch
import torch.nn.functional as F

from uper_parsing.modeling.inference import (
    InferenceSettings,
    multi_scale_flip_inference,
    run_inference,
    slide_inference,
    whole_inference,
)

K = 3


def _per_pixel(images: torch.Tensor) -> torch.Tensor:
    """A deterministic per-pixel logits function: a fixed 1x1 map of the channels."""
    weight = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.2, -1.0], [-0.7, 1.5, 0.1]]).view(K, 3, 1, 1)
    return F.conv2d(images, weight, bias=torch.tensor([0.1, -0.2, 0.3]))


def _images(height=45, width=37):
    return torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "crop, stride", [((16, 16), (11, 11)), ((20, 64), (20, 13)), ((64, 64), (32, 32))]
)
def test_slide_equals_whole_for_a_per_pixel_function(crop, stride):
    images = _images()
    expected = whole_inference(_per_pixel, images)
    torch.testing.assert_close(expected, _per_pixel(images))
    result = slide_inference(_per_pixel, images, crop_size=crop, stride=stride, size_divisibility=8)
    torch.testing.assert_close(result, expected)


def test_slide_windows_follow_mmseg_grid():
    seen = []

    def record(window):
        seen.append(tuple(window.shape[-2:]))
        return torch.ones(window.shape[0], K, window.shape[-2] // 4, window.shape[-1] // 4)

    result = slide_inference(record, _images(45, 37), crop_size=(16, 16), stride=(11, 11))
    # rows: max(45 - 16 + 10, 0) // 11 + 1 = 4 windows; cols: (37 - 16 + 10) // 11 + 1 = 3
    assert len(seen) == 12 and set(seen) == {(16, 16)}
    torch.testing.assert_close(result, torch.ones(2, K, 45, 37))  # overlaps are averaged


def test_whole_inference_pads_and_crops():
    shapes = []

    def logits_fn(images):
        shapes.append(tuple(images.shape[-2:]))
        return _per_pixel(images)

    images = _images()
    result = whole_inference(logits_fn, images, size_divisibility=32)
    assert shapes == [(64, 64)] and result.shape == (2, K, 45, 37)
    torch.testing.assert_close(result, _per_pixel(images))


def test_tta_of_an_equivariant_function_is_its_softmax():
    """A per-pixel function commutes with flips, so scale 1 + flip gives back its softmax."""
    images = _images()
    result = multi_scale_flip_inference(
        lambda x: whole_inference(_per_pixel, x), images, scales=(1.0,), flip=True
    )
    torch.testing.assert_close(result, _per_pixel(images).softmax(1))


def test_tta_averages_probabilities_over_scales_and_flips():
    images = _images()
    calls = []

    def ramp(x):  # logits depend on the column: flipping matters
        calls.append(tuple(x.shape[-2:]))
        column = torch.linspace(0, 1, x.shape[-1]).expand(x.shape[0], 1, x.shape[-2], -1)
        return torch.cat([column, -column, torch.zeros_like(column)], dim=1)

    result = multi_scale_flip_inference(ramp, images, scales=(0.5, 1.0), flip=True)
    assert calls == [(23, 19), (23, 19), (45, 37), (45, 37)]
    probs = []
    for size in ((23, 19), (45, 37)):
        logits = ramp(torch.zeros(2, 3, *size))
        for variant in (logits, logits.flip(-1)):
            up = F.interpolate(variant, size=(45, 37), mode="bilinear", align_corners=False)
            probs.append(up.softmax(1))
    torch.testing.assert_close(result, sum(probs) / 4)


def test_run_inference_dispatch_and_settings():
    images = _images()
    slide = InferenceSettings(mode="slide", crop_size=(16, 16), stride=(8, 8))
    torch.testing.assert_close(run_inference(_per_pixel, images, slide), _per_pixel(images))
    tta = InferenceSettings(tta=True, tta_scales=(1.0,), tta_flip=True)
    torch.testing.assert_close(
        run_inference(_per_pixel, images, tta), _per_pixel(images).softmax(1)
    )
    with pytest.raises(ValueError, match="mode"):
        InferenceSettings(mode="tiles")
    with pytest.raises(ValueError, match="stride"):
        InferenceSettings(mode="slide", crop_size=(16, 16), stride=(32, 8))


def test_inference_settings_from_config():
    from uper_parsing.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_list(["TEST.MODE", "slide", "TEST.AUG.ENABLED", True, "TEST.AUG.FLIP", False])
    settings = InferenceSettings.from_config(cfg)
    assert settings.mode == "slide" and settings.crop_size == (512, 512)
    assert settings.stride == (341, 341) and settings.tta and not settings.tta_flip
    assert settings.tta_scales == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def _map_and_vector(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """A dense map (per-pixel) and image-level logits that depend on where the columns are."""
    column = torch.linspace(0, 1, images.shape[-1])
    vector = torch.stack([(images * column).mean((1, 2, 3)), images.mean((1, 2, 3))], dim=1)
    return {"map": _per_pixel(images), "vector": vector}


def test_slide_of_a_dict_stitches_maps_and_averages_vector_probabilities():
    images = _images()
    seen = []

    def record(window):
        seen.append(window)
        return _map_and_vector(window)

    result = slide_inference(record, images, crop_size=(32, 32), stride=(16, 16))
    assert set(result) == {"map", "vector"} and result["vector"].shape == (2, 2)
    torch.testing.assert_close(result["map"], _per_pixel(images))
    probs = torch.stack([_map_and_vector(w)["vector"].softmax(1) for w in seen]).mean(0)
    assert len(seen) == 4  # 2 x 2 windows
    torch.testing.assert_close(result["vector"], probs.log())
    torch.testing.assert_close(result["vector"].softmax(1), probs)


def test_slide_with_one_window_equals_whole_for_every_output():
    images = _images()
    whole = whole_inference(_map_and_vector, images, size_divisibility=8)
    slide = slide_inference(
        _map_and_vector, images, crop_size=(48, 40), stride=(48, 40), size_divisibility=8
    )
    torch.testing.assert_close(slide["map"], whole["map"])
    torch.testing.assert_close(slide["vector"], whole["vector"].log_softmax(1))


@pytest.mark.parametrize("average_logits", [False, True])
def test_tta_of_a_dict_never_flips_vectors_and_averages_their_probabilities(average_logits):
    images = _images()
    result = multi_scale_flip_inference(
        lambda x: whole_inference(_map_and_vector, x),
        images,
        scales=(0.5, 1.0),
        flip=True,
        average_logits=average_logits,
    )
    assert result["map"].shape == (2, K, 45, 37) and result["vector"].shape == (2, 2)
    maps, probs = [], []
    for size in ((23, 19), (45, 37)):
        scaled = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        for flipped in (False, True):
            out = _map_and_vector(scaled.flip(-1) if flipped else scaled)
            up = F.interpolate(out["map"], size=(45, 37), mode="bilinear", align_corners=False)
            up = up.flip(-1) if flipped else up
            maps.append(up if average_logits else up.softmax(1))
            probs.append(out["vector"].softmax(1))  # the vector of the flipped image, as it is
    torch.testing.assert_close(result["map"], sum(maps) / 4)
    torch.testing.assert_close(result["vector"].softmax(1), sum(probs) / 4)


def test_tta_around_slide_averages_the_windows_probabilities_once():
    """Slide returns log-probabilities, so TTA's softmax of them gives the windows' mean back."""
    images = _images()
    settings = InferenceSettings(
        mode="slide", crop_size=(32, 32), stride=(16, 16), tta=True, tta_scales=(1.0,)
    )
    result = run_inference(_map_and_vector, images, settings, average_logits=True)
    slide = slide_inference(_map_and_vector, images, crop_size=(32, 32), stride=(16, 16))
    torch.testing.assert_close(result["map"], slide["map"])
    torch.testing.assert_close(result["vector"], slide["vector"])


def test_outputs_of_other_ranks_are_rejected():
    with pytest.raises(ValueError, match=r"\(N, K\) logits"):
        whole_inference(lambda x: {"bad": x.mean(1)}, _images())
