"""demo.py writes a picture and a label map per input image, at the image's size (semantic), or
a picture, an id PNG and a segments JSON (panoptic), or a picture (unified perceptual parser);
with --checkpoint alone it takes the config and the classes from the checkpoint; it skips and
counts unreadable images, and turns a video into a video of pictures."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from uper_parsing.data.panoptic_utils import rgb2id

ROOT = Path(__file__).resolve().parents[1]


def _run_demo(
    tmp_path, config: str, sizes: dict, opts: tuple[str, ...] = (), datasets: Path | None = None
) -> Path:
    """demo.py on random images of ``sizes``; ``datasets`` the synthetic scenes' folder
    (default: an empty one in ``tmp_path``)."""
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for stem, (h, w) in sizes.items():
        cv2.imwrite(str(images / f"{stem}.jpg"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "demo.py"), "--config-file", config, "--input", str(images),
           "--output", str(out), "MODEL.DEVICE", "cpu", *opts]  # fmt: skip
    env = dict(os.environ, UPER_PARSING_DATASETS=str(datasets or tmp_path / "datasets"))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_demo_writes_pictures_and_label_maps(tmp_path, synthetic_datasets):
    sizes = {"a": (70, 90), "b": (64, 64)}
    config = "configs/quickstart/semantic_fpn_R18_synthetic.yaml"
    out = _run_demo(tmp_path, config, sizes, datasets=synthetic_datasets)
    for stem, (h, w) in sizes.items():
        labels = cv2.imread(str(out / f"{stem}_labels.png"), cv2.IMREAD_UNCHANGED)
        assert labels.shape == (h, w) and labels.max() < 10
        picture = cv2.imread(str(out / f"{stem}.png"))
        assert picture.shape[1] > 2 * w  # [image | prediction] side by side, upscaled


def test_demo_runs_a_panoptic_model(tmp_path, synthetic_datasets):
    sizes = {"a": (70, 90)}
    config = "configs/quickstart/panoptic_fpn_R18_synthetic.yaml"
    out = _run_demo(tmp_path, config, sizes, datasets=synthetic_datasets)
    bgr = cv2.imread(str(out / "a_panoptic.png"), cv2.IMREAD_UNCHANGED)
    ids = rgb2id(bgr[..., ::-1])
    assert ids.shape == (70, 90)
    segments = json.loads((out / "a_segments.json").read_text())
    # every listed segment is in the PNG with its area, every non-void pixel is listed
    assert {s["id"] for s in segments} == set(np.unique(ids).tolist()) - {0}
    for s in segments:
        assert int((ids == s["id"]).sum()) == s["area"]
        assert s["category_name"]
    assert cv2.imread(str(out / "a.png")).shape[1] > 2 * 90
    assert not (out / "a_labels.png").exists()


def test_demo_runs_a_unified_parser(tmp_path):
    """Random weights saved from the shrunk quickstart parser; no dataset is generated."""
    from uper_parsing.checkpoint import Checkpointer
    from uper_parsing.config import get_cfg
    from uper_parsing.modeling import build_model
    from uper_parsing.tasks import configure_model

    config = "configs/quickstart/unified_parsing_R18_synthetic.yaml"
    shrink = ("MODEL.SEM_SEG_HEAD.CONVS_DIM", "16", "MODEL.MULTITASK.TEXTURE_CONVS_DIM", "8",
              "MODEL.MULTITASK.TEXTURE_NUM_CONVS", "1", "MODEL.DEVICE", "cpu")  # fmt: skip
    cfg = get_cfg()
    cfg.merge_from_file(str(ROOT / config))
    cfg.merge_from_list(list(shrink))
    configure_model(cfg)  # set-up: the parser's class counts from the datasets' metadata
    torch.manual_seed(0)
    Checkpointer(build_model(cfg), str(tmp_path)).save("random")
    weights = ("MODEL.WEIGHTS", str(tmp_path / "random.pth"))
    out = _run_demo(tmp_path, config, {"a": (70, 90)}, (*shrink, *weights))
    picture = cv2.imread(str(out / "a.png"))
    assert picture is not None and picture.shape[2] == 3
    assert picture.shape[1] > 4 * 90  # [image | object | part | material], upscaled
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]
    assert not (tmp_path / "datasets").exists()


def load_demo():
    spec = importlib.util.spec_from_file_location("demo", ROOT / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_panoptic_outputs_write_picture_id_png_and_segments_json(tmp_path):
    demo = load_demo()
    meta = SimpleNamespace(thing_classes=["car"], stuff_classes=["road", "sky"])
    seg = np.zeros((40, 60), np.int32)
    seg[:20] = 3
    seg[25:35, 5:25] = 300  # an id above 255 needs the G channel
    info = [
        {"id": 3, "isthing": False, "category_id": 1, "area": 1200},
        {"id": 300, "isthing": True, "category_id": 0, "area": torch.tensor(200),
         "score": torch.tensor(0.75), "instance_id": np.int64(0)},
    ]  # fmt: skip
    rgb = np.full((40, 60, 3), 90, np.uint8)
    demo.write_outputs(
        rgb, {"panoptic_seg": (torch.from_numpy(seg), info)}, meta, str(tmp_path), "a"
    )
    bgr = cv2.imread(str(tmp_path / "a_panoptic.png"), cv2.IMREAD_UNCHANGED)
    assert (rgb2id(bgr[..., ::-1]) == seg).all()
    segments = json.loads((tmp_path / "a_segments.json").read_text())
    assert segments == [
        {"id": 3, "isthing": False, "category_id": 1, "area": 1200, "category_name": "sky"},
        {"id": 300, "isthing": True, "category_id": 0, "area": 200, "score": 0.75,
         "instance_id": 0, "category_name": "car"},
    ]  # fmt: skip
    picture = cv2.imread(str(tmp_path / "a.png"))
    assert picture.shape[1] > 2 * 60  # [image | prediction], upscaled
    assert not (tmp_path / "a_labels.png").exists()


def _checkpoint_with_config_and_classes(folder: Path) -> Path:
    """A random semantic FPN saved as the trainer saves it: weights, config and class lists."""
    from uper_parsing.checkpoint import Checkpointer
    from uper_parsing.config import get_cfg
    from uper_parsing.data import MetadataCatalog
    from uper_parsing.modeling import build_model
    from uper_parsing.tasks import SEM_SEG

    cfg = get_cfg()
    cfg.merge_from_file(str(ROOT / "configs/quickstart/semantic_fpn_R18_synthetic.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.SEM_SEG_HEAD.CONVS_DIM", 32])
    torch.manual_seed(0)
    metadata = SEM_SEG.stored_metadata(MetadataCatalog.get(cfg.DATASETS.TRAIN[0]))
    Checkpointer(build_model(cfg), str(folder), metadata=metadata, config=cfg.dump()).save("m")
    return folder / "m.pth"


@pytest.mark.slow  # one demo.py process: 3 images and a 3-frame video (about 25 s)
def test_demo_with_a_checkpoint_alone_skips_unreadable_images_and_writes_a_video(tmp_path):
    checkpoint = _checkpoint_with_config_and_classes(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for stem, (h, w) in {"a": (70, 90), "b": (64, 48)}.items():
        cv2.imwrite(str(images / f"{stem}.png"), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    (images / "broken.jpg").write_bytes(b"not an image at all")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (64, 48))
    for _ in range(3):
        writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    writer.release()
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "demo.py"), "--checkpoint", str(checkpoint),
           "--input", str(images), "--video-input", str(video), "--output", str(out),
           "--device", "cpu"]  # fmt: skip
    env = dict(os.environ, UPER_PARSING_DATASETS=str(tmp_path / "datasets"))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "a.png", "a_labels.png", "b.png", "b_labels.png", "clip.mp4"
    ]  # fmt: skip
    log = proc.stdout + proc.stderr
    assert "Skipped 1 unreadable image(s)" in log and "broken.jpg" in log
    assert cv2.imread(str(out / "b_labels.png"), cv2.IMREAD_UNCHANGED).shape == (64, 48)
    frames = cv2.VideoCapture(str(out / "clip.mp4"))
    count = 0
    while frames.read()[0]:
        count += 1
    assert count == 3
    assert not (tmp_path / "datasets").exists()  # classes and config came from the checkpoint


def test_demo_arguments_take_detectron2s_flags_and_trailing_overrides():
    demo = load_demo()
    args = demo.parse_args(["--config-file", "c.yaml", "--input", "x.png", "--output", "o",
                            "--confidence-threshold", "0.3", "MODEL.DEVICE", "cpu"])  # fmt: skip
    assert args.opts == ["MODEL.DEVICE", "cpu"] and args.confidence_threshold == 0.3
    args = demo.parse_args(["--checkpoint", "m.pth", "--input", "x.png", "--output", "o",
                            "--opts", "MODEL.DEVICE", "cpu"])  # fmt: skip
    assert args.opts == ["MODEL.DEVICE", "cpu"] and args.config_file == ""
    with pytest.raises(SystemExit):
        demo.parse_args(["--input", "x.png", "--output", "o"])  # neither config nor checkpoint
