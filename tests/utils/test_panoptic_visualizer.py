"""Panoptic pictures: segment colours, void, per-instance colours, boxes, names, ground truth of
raw and mapped dataset dicts, the predictor drawer."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from uper_parsing.data.panoptic_utils import id2rgb
from uper_parsing.tasks import TASK_REGISTRY
from uper_parsing.visualization import Visualizer, segment_class_name, segment_label
from uper_parsing.visualization.colormap import darken

CAR, PERSON = [200, 30, 30], [30, 30, 200]
ROAD, SKY = [128, 64, 128], [70, 130, 180]
META = SimpleNamespace(
    thing_classes=["car", "person"],
    thing_colors=[CAR, PERSON],
    stuff_classes=["road", "sky"],
    stuff_colors=[ROAD, SKY],
)
GREY = 100
H, W = 200, 300


def scene():
    """Grey image; sky (id 5) rows 0-79, void rows 80-99, two touching cars (ids 7, 9) in rows
    100-179 at cols 20-139 and 140-259, void elsewhere."""
    img = np.full((H, W, 3), GREY, np.uint8)
    seg = np.zeros((H, W), np.int32)
    seg[:80] = 5
    seg[100:180, 20:140] = 7
    seg[100:180, 140:260] = 9
    info = [
        {"id": 5, "isthing": False, "category_id": 1, "area": 80 * W},
        {"id": 7, "isthing": True, "category_id": 0, "area": 9600, "score": 0.87},
        {"id": 9, "isthing": True, "category_id": 0, "area": 9600, "score": 0.6},
    ]
    return img, seg, info


def blend(color, alpha: float = 0.5) -> np.ndarray:
    return np.round(GREY * (1 - alpha) + np.asarray(color) * alpha).astype(int)


def draw_panoptic_seg(img, seg, info, meta, alpha: float = 0.5) -> np.ndarray:
    """The segments over the image at its own size, no legend."""
    visualizer = Visualizer(img, meta, min_short_side=0)
    return visualizer.draw_panoptic_seg(seg, info, alpha=alpha, show_legend=False).get_image()


def test_stuff_void_and_thing_colours():
    img, seg, info = scene()
    out = draw_panoptic_seg(img, seg, info, META, alpha=0.5)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    # Stuff in its stuff colour, the first car in its class colour (far from names and edges).
    for y, x in [(5, 5), (5, 290), (70, 150)]:
        assert np.abs(out[y, x].astype(int) - blend(SKY)).max() <= 1
    for y, x in [(105, 25), (170, 25), (105, 130)]:
        assert np.abs(out[y, x].astype(int) - blend(CAR)).max() <= 1
    # Void is the image, untouched, even next to segments.
    assert (out[80:100] == GREY).all() and (out[180:] == GREY).all()
    assert (out[100:180, :20] == GREY).all() and (out[100:180, 260:] == GREY).all()


def test_instances_of_one_class_differ_and_are_outlined():
    img, seg, info = scene()
    out = draw_panoptic_seg(img, seg, info, META, alpha=0.5)
    second = out[105, 255].astype(int)
    assert (out[170, 150].astype(int) == second).all()  # one colour for the whole instance
    # Unblend (alpha 0.5 over grey): each channel moved 40..70 from the class colour.
    moved = np.abs(2 * second - GREY - np.asarray(CAR))
    assert (moved >= 40 - 2).all() and (moved <= 70 + 2).all()
    # The boundary between the two cars is darkened on both sides, each in its own colour.
    assert (out[170, 139] == (np.asarray(CAR) * 0.55).astype(np.uint8)).all()
    assert not (out[170, 140] == out[170, 139]).all()
    # Deterministic: the same picture every time.
    assert (draw_panoptic_seg(img, seg, info, META, alpha=0.5) == out).all()


def test_three_instances_get_three_colours():
    img = np.full((60, 90, 3), GREY, np.uint8)
    seg = np.zeros((60, 90), np.int32)
    for k in range(3):
        seg[:, 30 * k : 30 * k + 30] = k + 1
    info = [{"id": k + 1, "isthing": True, "category_id": 1} for k in range(3)]
    out = draw_panoptic_seg(img, seg, info, META, alpha=1.0)
    colours = {tuple(out[58, 30 * k + 2]) for k in range(3)}
    assert len(colours) == 3 and tuple(PERSON) in colours


def test_names_are_drawn_inside_their_segments():
    img, seg, info = scene()
    out = draw_panoptic_seg(img, seg, info, META, alpha=0.5)
    # A name box is filled with its segment's unblended colour: find the sky and first-car boxes.
    for color, (y0, y1, x0, x1) in [(SKY, (0, 80, 0, W)), (CAR, (100, 180, 20, 140))]:
        ys, xs = np.nonzero((out == color).all(axis=2))
        assert ys.size > 0
        assert y0 <= ys.mean() < y1 and x0 <= xs.mean() < x1
    assert segment_label(info[1], META) == "car 87%"
    assert segment_label(info[0], META) == "sky"
    crowd = {"id": 3, "isthing": True, "category_id": 1, "iscrowd": 1}
    assert segment_label(crowd, META) == "person (crowd)"
    assert segment_class_name({"isthing": False, "category_id": 0}, META) == "road"
    assert segment_class_name({"isthing": True, "category_id": 7}, META) == "7"


def test_tiny_empty_and_unlisted_segments():
    img = np.full((40, 50, 3), GREY, np.uint8)
    # No segments at all: the picture is the image.
    empty = draw_panoptic_seg(img, np.zeros((40, 50), np.int32), [], META)
    assert (empty == img).all()
    # A one-pixel thing, a 2x2 stuff region and a listed segment with no pixels.
    seg = np.zeros((40, 50), np.int32)
    seg[20, 25] = 4
    seg[0:2, 0:2] = 6
    info = [
        {"id": 4, "isthing": True, "category_id": 0, "score": 0.5},
        {"id": 6, "isthing": False, "category_id": 0},
        {"id": 8, "isthing": True, "category_id": 1, "score": 0.9},
    ]
    out = draw_panoptic_seg(img, torch.from_numpy(seg), info, META)
    assert out.shape == (40, 50, 3)
    assert (out[20, 25] != GREY).any()
    with pytest.raises(ValueError, match="segment id 6 that segments_info does not list"):
        draw_panoptic_seg(img, seg, info[:1], META)


def test_side_by_side_picture_widths():
    img, seg, info = scene()
    # 200 px short side -> upscaled x1.92 to 384 x 576 panels, 6 px gaps (pad 3 at font 0.5).
    visualizer = Visualizer(img, META)
    truth = {"pan_seg": seg, "segments_info": info}
    both = visualizer.draw_panoptic_prediction(seg, info, truth).get_image()
    assert both.shape[1] == 3 * 576 + 2 * 6
    alone = visualizer.draw_panoptic_prediction(seg, info).get_image()
    assert alone.shape[1] == 2 * 576 + 6
    assert both.shape[0] == alone.shape[0] > 384  # titles above, legend below


def write_panoptic_png(path, ids: np.ndarray) -> None:
    cv2.imwrite(str(path), cv2.cvtColor(id2rgb(ids), cv2.COLOR_RGB2BGR))


def test_predictor_drawer_shows_prediction_and_ground_truth(tmp_path):
    img, seg, info = scene()
    gt_info = [dict(info[0]), dict(info[1]), {"id": 9, "isthing": True, "category_id": 1}]
    for s in gt_info:
        s.pop("score", None)
    write_panoptic_png(tmp_path / "pan.png", seg)
    d = {"file_name": "x.jpg", "height": H, "width": W, "image_id": 1}
    d.update(pan_seg_file_name=str(tmp_path / "pan.png"), segments_info=gt_info)
    outputs = {"panoptic_seg": (torch.from_numpy(seg), info)}
    draw = TASK_REGISTRY["coco_panoptic_seg"].draw
    picture = draw(img, outputs, d, META)
    assert picture.shape[1] == 3 * 576 + 2 * 6
    # Rows below the titles: the image panel is plain grey there.
    title_h = int(np.argmax((picture[:, 5] == GREY).all(axis=1)))
    row = title_h + round(105 * 1.92)
    col = round(250 * 1.92)
    pred_px = picture[row, 576 + 6 + col].astype(int)
    gt_px = picture[row, 2 * (576 + 6) + col].astype(int)
    assert np.abs(gt_px - blend(PERSON)).max() <= 1  # id 9 is a person in the ground truth
    assert np.abs(pred_px - blend(PERSON)).max() > 20 and np.abs(pred_px - blend(CAR)).max() > 10
    # No panoptic PNG in the dict: [image | prediction].
    del d["pan_seg_file_name"]
    assert draw(img, outputs, d, META).shape[1] == 2 * 576 + 6


def disk(shape, center, radius) -> np.ndarray:
    ys, xs = np.ogrid[: shape[0], : shape[1]]
    return (ys - center[0]) ** 2 + (xs - center[1]) ** 2 <= radius**2


def test_things_get_a_box_on_their_extent_and_stuff_none():
    img = np.full((H, W, 3), GREY, np.uint8)
    seg = np.full((H, W), 5, np.int32)  # sky
    seg[disk((H, W), (100, 60), 30)] = 6  # a round patch of road: stuff
    seg[disk((H, W), (100, 200), 40)] = 7  # a round person: a thing
    info = [
        {"id": 5, "isthing": False, "category_id": 1},
        {"id": 6, "isthing": False, "category_id": 0},
        {"id": 7, "isthing": True, "category_id": 1, "score": 0.95},
    ]
    out = draw_panoptic_seg(img, seg, info, META).astype(int)
    x0, y0, x1, y1 = 160, 60, 241, 141  # the person's tight box, exclusive ends
    edge = darken(np.asarray(PERSON, np.uint8)).astype(int)
    for rows, cols in [(y0, slice(x0, x1)), (y1 - 1, slice(x0, x1))]:
        assert (out[rows, cols] == edge).all()
    for rows, cols in [(slice(y0, y1), x0), (slice(y0, y1), x1 - 1)]:
        assert (out[rows, cols] == edge).all()
    # Its corners are sky pixels under the box; just outside them, plain sky.
    assert (out[y0 - 2, x0 - 2] == blend(SKY)).all() and (out[y1 + 1, x1 + 1] == blend(SKY)).all()
    assert (out[y0 + 2, x0 + 2] == blend(SKY)).all()  # inside the box, off the disk
    # The road patch is stuff: no box, its bounding-box corner stays sky.
    assert (out[70, 30] == blend(SKY)).all() and (out[71, 31] == blend(SKY)).all()


def test_mapped_training_input_is_drawn_as_segments():
    sem = np.full((80, 100), 255, np.uint8)
    sem[:40] = 2  # stuff 1 (sky)
    sem[40:] = 0  # things: one instance, the rest a crowd region
    masks = np.zeros((1, 80, 100), np.uint8)
    masks[0, 50:70, 10:40] = 1
    instances = {"masks": torch.from_numpy(masks), "labels": torch.tensor([1]), "boxes": None}
    mapped = {"image": None, "sem_seg": torch.from_numpy(sem), "instances": instances}
    img = np.full((80, 100, 3), GREY, np.uint8)
    visualizer = Visualizer(img, META, min_short_side=0)
    drawn = visualizer.draw_dataset_dict(mapped).get_image()
    ids = np.where(sem == 2, 2, 0)
    ids[masks[0] > 0] = 256
    info = [
        {"id": 2, "isthing": False, "category_id": 1},
        {"id": 256, "isthing": True, "category_id": 1},
    ]
    assert (drawn == visualizer.draw_panoptic_seg(ids, info).get_image()).all()
    assert (drawn[45:, 60:100] == GREY).all()  # thing pixels of no instance (crowd) are void


def test_dataset_dict_panoptic_png_is_read(tmp_path):
    img, seg, info = scene()
    gt_info = [{k: v for k, v in s.items() if k != "score"} for s in info]
    write_panoptic_png(tmp_path / "pan.png", seg)
    d = {"file_name": "x.jpg", "height": H, "width": W, "segments_info": gt_info}
    d["pan_seg_file_name"] = str(tmp_path / "pan.png")
    visualizer = Visualizer(img, META, min_short_side=0)
    drawn = visualizer.draw_dataset_dict(d).get_image()
    assert (drawn == visualizer.draw_panoptic_seg(seg, gt_info).get_image()).all()
    assert drawn.shape[1] > W  # with its legend
    with pytest.raises(ValueError, match="segment id 9 of .*pan.png is not listed"):
        visualizer.draw_dataset_dict({**d, "segments_info": gt_info[:2]})
