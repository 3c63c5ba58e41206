"""Visualizer pictures: sizes, blended colours, contours, names, legend, compose, the font."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from uper_parsing.data import Metadata
from uper_parsing.visualization import LegendEntry, Panel, VisImage, Visualizer
from uper_parsing.visualization.colormap import (
    PANEL_RGB,
    colormap,
    contrast_text_color,
    palette_for,
)
from uper_parsing.visualization.text import Style

COLORS = [[250, 40, 40], [40, 200, 60], [30, 60, 230], [240, 220, 20]]
META = SimpleNamespace(
    stuff_classes=["wall", "grass", "sky", "sand"], stuff_colors=COLORS, ignore_label=255
)
GREY = 100


def scene(height: int = 200, width: int = 300):
    """Grey image; left 2/3 "wall" (0), right 1/3 "sky" (2), bottom 20 rows ignore."""
    img = np.full((height, width, 3), GREY, np.uint8)
    labels = np.zeros((height, width), np.int64)
    labels[:, 2 * width // 3 :] = 2
    labels[height - 20 :] = 255
    return img, labels


def blend(color, alpha: float = 0.6) -> np.ndarray:
    return np.round(GREY * (1 - alpha) + np.asarray(color) * alpha).astype(np.uint8)


def test_shape_dtype_and_blended_colours():
    img, labels = scene()
    vis = Visualizer(img, META, min_short_side=0).draw_sem_seg(labels, alpha=0.6)
    assert isinstance(vis, VisImage)
    out = vis.get_image()
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[0] == 200 and out.shape[1] > 300  # legend appended on the right
    # Far from the names (drawn near region centres) and from the boundaries.
    for y, x in [(5, 5), (170, 5), (5, 190), (170, 190)]:
        assert np.abs(out[y, x].astype(int) - blend(COLORS[0])).max() <= 1
    for y, x in [(5, 210), (170, 295)]:
        assert np.abs(out[y, x].astype(int) - blend(COLORS[2])).max() <= 1
    # Ignore pixels are the image, unblended.
    assert (out[181:200, :300] == GREY).all()


def test_contours_and_names_are_drawn():
    img, labels = scene()
    visualizer = Visualizer(img, META, min_short_side=0)
    named = visualizer.draw_sem_seg(labels, show_legend=False).get_image()
    plain = visualizer.draw_sem_seg(labels, show_legend=False, area_threshold=10**9).get_image()
    assert named.shape == plain.shape == (200, 300, 3)
    # Boundary between wall and sky: both sides darkened in their own class colour.
    dark_wall = (np.asarray(COLORS[0]) * 0.55).astype(np.uint8)
    dark_sky = (np.asarray(COLORS[2]) * 0.55).astype(np.uint8)
    assert (plain[50, 199] == dark_wall).all() and (plain[50, 200] == dark_sky).all()
    # Names change pixels only near the centres of the regions.
    changed_y, changed_x = np.nonzero((named != plain).any(axis=2))
    assert changed_y.size > 0
    wall_center, sky_center = (90, 100), (90, 250)
    near = np.minimum(
        np.hypot(changed_y - wall_center[0], changed_x - wall_center[1]),
        np.hypot(changed_y - sky_center[0], changed_x - sky_center[1]),
    )
    assert near.max() < 60


def legend_area(out: np.ndarray, width: int) -> np.ndarray:
    return out[:, width:]


def test_legend_lists_present_classes_by_area():
    img, labels = scene()
    out = Visualizer(img, META, min_short_side=0).draw_sem_seg(labels).get_image()
    legend = legend_area(out, 300)
    assert legend.shape[1] > 40
    rows_of = {}
    for class_id in range(4):
        ys, _ = np.nonzero((legend == COLORS[class_id]).all(axis=2))
        rows_of[class_id] = ys
    assert rows_of[0].size > 25 and rows_of[2].size > 25  # swatches of wall and sky
    assert rows_of[1].size == 0 and rows_of[3].size == 0  # grass, sand absent
    assert rows_of[0].mean() < rows_of[2].mean()  # wall (larger) is listed first


def test_small_images_are_upscaled_for_legibility():
    img, labels = scene(64, 96)
    visualizer = Visualizer(img, META)  # default: short side >= 384
    assert visualizer.scale == pytest.approx(6.0)
    out = visualizer.draw_sem_seg(labels, show_legend=False).get_image()
    assert out.shape == (384, 576, 3)
    assert np.abs(out[10, 10].astype(int) - blend(COLORS[0])).max() <= 1
    assert (out[-60:, :] == GREY).all()  # ignore rows, nearest-neighbour upscaled


def test_torch_scores_and_size_mismatch():
    img, labels = scene(40, 60)
    ids = np.where(labels == 255, 1, labels)
    scores = torch.from_numpy(np.arange(4)[:, None, None] == ids).to(torch.bfloat16)
    visualizer = Visualizer(img, META)
    from_scores = visualizer.draw_sem_seg(scores).get_image()
    from_ids = visualizer.draw_sem_seg(torch.from_numpy(ids)[None]).get_image()  # (1, H, W)
    assert from_scores.dtype == np.uint8
    assert (from_scores == from_ids).all()
    with pytest.raises(ValueError, match="must match"):
        visualizer.draw_sem_seg(labels[:-1])


def test_save_writes_bgr(tmp_path):
    img, labels = scene(40, 60)
    vis = Visualizer(img, META).draw_sem_seg(labels)
    path = tmp_path / "sub" / "vis.png"
    vis.save(str(path))
    read = cv2.imread(str(path))
    assert (read[..., ::-1] == vis.get_image()).all()


def test_side_by_side_prediction_picture():
    img, gt = scene(128, 128)
    pred = np.where(gt == 255, 0, gt)
    pred[:30, :30] = 3  # "sand" only in the prediction
    visualizer = Visualizer(img, META)
    both = visualizer.draw_sem_seg_prediction(pred, {"sem_seg": gt}).get_image()
    only_pred = visualizer.draw_sem_seg_prediction(torch.from_numpy(pred)).get_image()
    assert both.dtype == np.uint8 and both.shape[2] == 3
    assert both.shape[1] > 3 * 384 and both.shape[0] > 384  # three upscaled panels + titles
    assert 2 * 384 < only_pred.shape[1] < 3 * 384
    legend = both[-40:]  # one legend below the panels
    for class_id in (0, 2, 3):
        assert (legend == COLORS[class_id]).all(axis=2).sum() > 25
    assert (legend == COLORS[1]).all(axis=2).sum() == 0


def test_compose_pads_heights():
    a = np.zeros((50, 40, 3), np.uint8)
    b = np.zeros((30, 20, 3), np.uint8)
    visualizer = Visualizer(a, min_short_side=0)
    gap = 2 * visualizer.style.pad
    out = visualizer.compose([Panel("a", a), Panel("b", b)]).get_image()
    assert out.shape[1] == 40 + gap + 20 and out.shape[0] > 50
    title_h = out.shape[0] - 50
    assert (out[title_h + 30 :, 40 + gap :] == PANEL_RGB).all()  # b padded below
    with pytest.raises(ValueError, match="at least one panel"):
        visualizer.compose([])
    with pytest.raises(ValueError, match="Panel 'grey' must be an \\(H, W, 3\\) uint8"):
        visualizer.compose([Panel("grey", np.zeros((5, 5), np.uint8))])


def test_colormap_helpers():
    colors = colormap(50)
    assert colors.shape == (50, 3) and colors.dtype == np.uint8
    assert len({tuple(c) for c in colors}) == 50
    palette = palette_for([[1, 2, 3]], 4)
    assert palette[0].tolist() == [1, 2, 3] and (palette[1:] == colors[1:4]).all()
    assert contrast_text_color((240, 220, 20)) == (0, 0, 0)
    assert contrast_text_color((0, 0, 128)) == (255, 255, 255)


def test_two_classes_blend_their_metadata_colours_at_alpha():
    img, labels = scene()
    out = Visualizer(img, META, min_short_side=0).draw_sem_seg(labels, alpha=0.2).get_image()
    # grey 100 * 0.8 + colour * 0.2, far from names and boundaries
    assert out[5, 5].tolist() == [130, 88, 88]  # wall (250, 40, 40)
    assert out[170, 295].tolist() == [86, 92, 126]  # sky (30, 60, 230)


def test_dataset_dict_label_file_is_read_and_drawn(tmp_path):
    img, labels = scene()
    path = tmp_path / "label.png"
    cv2.imwrite(str(path), labels.astype(np.uint8))
    metadata = Metadata("vis_test").set(**vars(META))  # the label reader's metadata type
    visualizer = Visualizer(img, metadata, min_short_side=0)
    from_file = visualizer.draw_dataset_dict({"file_name": "x.jpg", "sem_seg_file_name": str(path)})
    assert (from_file.get_image() == visualizer.draw_sem_seg(labels).get_image()).all()
    with pytest.raises(KeyError, match="x.jpg has no ground truth to draw"):
        visualizer.draw_dataset_dict({"file_name": "x.jpg"})
    cv2.imwrite(str(path), np.full((200, 300), 9, np.uint8))  # no class 9
    with pytest.raises(ValueError, match="label.png"):
        visualizer.draw_dataset_dict({"sem_seg_file_name": str(path)})


def ink(text: str) -> np.ndarray:
    canvas = np.full((40, 240, 3), 255, np.uint8)
    Style.for_short_side(384).put_text(canvas, text, (2, 2), (0, 0, 0))
    return canvas


def test_greek_and_cyrillic_names_render_as_glyphs():
    missing = ink("中")  # not in the font: its missing-glyph box
    assert (missing != 255).any()
    for text in ("θ", "Ж", "é"):
        drawn = ink(text)
        assert (drawn != 255).any() and not (drawn == missing).all(), text
    assert not (ink("θάλασσα") == ink("небо")).all()
    # a class name in the legend and on its region
    meta = SimpleNamespace(stuff_classes=["θάλασσα", "небо"], stuff_colors=COLORS[:2])
    img, labels = scene()
    greek = Visualizer(img, meta, min_short_side=0).draw_sem_seg(np.minimum(labels, 1))
    latin = Visualizer(img, META, min_short_side=0).draw_sem_seg(np.minimum(labels, 1))
    assert greek.width != latin.width or not (greek.get_image() == latin.get_image()).all()


def test_missing_and_unprintable_glyphs_never_raise():
    for text in ("中文", "\x00\n\t", "\ud800", "😀 ok", ""):
        ink(text)
    meta = SimpleNamespace(stuff_classes=["中文\ud800", "😀"], ignore_label=255)
    img, labels = scene(40, 60)
    out = Visualizer(img, meta).draw_sem_seg(np.minimum(labels, 1)).get_image()
    assert out.dtype == np.uint8 and out.shape[0] == 384


def test_same_input_gives_the_same_bytes(tmp_path):
    img, labels = scene(64, 96)
    first = Visualizer(img, META).draw_sem_seg(labels)
    second = Visualizer(img.copy(), META).draw_sem_seg(labels.copy())
    assert first.get_image().tobytes() == second.get_image().tobytes()
    first.save(str(tmp_path / "a.png"))
    second.save(str(tmp_path / "b.png"))
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_compose_places_legends_and_notes():
    square = np.zeros((100, 100, 3), np.uint8)
    visualizer = Visualizer(square, min_short_side=0)
    legend = [LegendEntry("wall", (250, 40, 40), 0.5), LegendEntry("sky", (30, 60, 230))]
    right = visualizer.compose([Panel("", square)], legend).get_image()
    assert right.shape[0] == 100 and right.shape[1] > 100  # at most 2:1 -> legend on the right
    assert (right[:, 100:] == COLORS[0]).all(axis=2).sum() > 25
    wide = np.zeros((60, 300, 3), np.uint8)
    below = visualizer.compose([Panel("", wide)], legend).get_image()
    assert below.shape[1] == 300 and below.shape[0] > 60  # wider than 2:1 -> legend below
    assert (below[60:] == COLORS[0]).all(axis=2).sum() > 25
    style = visualizer.style
    line_h = style.text_size("Ag", 1.15)[1]
    noted = visualizer.compose([Panel("", square)], notes=["one", "two"]).get_image()
    assert noted.shape == (100 + 2 * style.pad + 2 * (line_h + style.pad), 100, 3)
    own = visualizer.compose([Panel("", square, legend)]).get_image()
    assert own.shape[1] == 100 and own.shape[0] > 100  # a panel's legend: below, cut to width
