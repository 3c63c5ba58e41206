"""Bad data caught before and during training: truncated JPEGs are errors naming the file,
DATASETS.CHECK_ON_START stops before training, DATALOADER.SKIP_BAD_SAMPLES skips and counts."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from _data_helpers import SEM_SEG_CLASSES, truncate, write_sem_seg_set

from uper_parsing.config import get_cfg
from uper_parsing.data import (
    SKIPPED_KEY,
    MapDataset,
    TruncatedImageError,
    build_train_loader,
    read_image,
    register_sem_seg,
)
from uper_parsing.data.check import DatasetCheckError, check_dataset, check_on_start, sample_indices
from uper_parsing.engine import DefaultTrainer, hooks
from uper_parsing.utils.events import EventStorage


@pytest.fixture
def bad_set(tmp_path, fresh_name):
    """A registered semantic set of 4 JPEGs (24 x 32, 3 classes) whose "b.jpg" is truncated."""
    root = write_sem_seg_set(tmp_path, ("a", "b", "c", "d"))
    truncate(root / "images/b.jpg")
    register_sem_seg(
        fresh_name, image_root=root / "images", label_root=root / "labels", metadata=SEM_SEG_CLASSES
    )
    return fresh_name, root


def _cfg(name: str, **keys) -> object:
    cfg = get_cfg()
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (name,), ()
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = 3
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.INPUT.RESIZE_SCALE = [32, 24]
    cfg.INPUT.CROP.SIZE = [16, 16]
    cfg.SEED = 3
    for key, value in keys.items():
        group, leaf = key.split("__")
        cfg[group][leaf] = value
    return cfg


def test_truncated_jpeg_is_an_error_naming_the_file(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    path = tmp_path / "x.jpg"
    cv2.imwrite(str(path), image)
    complete = path.read_bytes()
    for tail in (b"\0" * 300, b"appended by a camera"):  # padding, data after the end marker
        path.write_bytes(complete + tail)
        assert read_image(path).shape == (40, 48, 3)
    path.write_bytes(complete)
    truncate(path)  # its last 10 %
    with pytest.raises(TruncatedImageError, match=f"Image file {path} is truncated") as err:
        read_image(path)
    assert isinstance(err.value, OSError) and "0xFFD9" in err.value.reason
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=f"Image file {path} is empty"):
        read_image(path)


def test_sample_indices_are_a_fixed_sample():
    assert sample_indices(5, -1) == sample_indices(5, 9) == [0, 1, 2, 3, 4]
    first = sample_indices(100, 7)
    assert first == sample_indices(100, 7) and len(set(first)) == 7 and first == sorted(first)


def test_check_on_start_stops_with_the_problems(bad_set):
    name, root = bad_set
    check_on_start(_cfg(name, DATASETS__CHECK_ON_START=0))  # off
    with pytest.raises(DatasetCheckError) as err:
        check_on_start(_cfg(name, DATASETS__CHECK_ON_START=-1))
    message = str(err.value)
    assert message.startswith(f"DATASETS.CHECK_ON_START -1 found 1 problem(s) in {name}:\n")
    assert f"\n  {root}/images/b.jpg: file_name: truncated (" in message
    assert "tools/check_dataset.py" in message and "DATALOADER.SKIP_BAD_SAMPLES" in message
    sampled = check_dataset(name, num_images=2)  # the sample of sample_indices(4, 2)
    assert (sampled.checked, sampled.total) == (2, 4)
    with pytest.raises(ValueError, match="CHECK_ON_START must be -1"):
        check_on_start(_cfg(name, DATASETS__CHECK_ON_START=-2))
    write_sem_seg_set(root, ("b",))  # a complete b.jpg again: training may start
    check_on_start(_cfg(name, DATASETS__CHECK_ON_START=-1))


def test_default_trainer_checks_before_building_anything(bad_set, monkeypatch):
    def no_model(cfg):
        raise AssertionError("the model was built before the data were checked")

    monkeypatch.setattr(DefaultTrainer, "build_model", classmethod(lambda cls, cfg: no_model(cfg)))
    with pytest.raises(DatasetCheckError, match="b.jpg: file_name: truncated"):
        DefaultTrainer(_cfg(bad_set[0], DATASETS__CHECK_ON_START=1_000))


def _file_names(loader, batches: int) -> list[list[str]]:
    it = iter(loader)
    return [[d["file_name"] for d in next(it)] for _ in range(batches)]


@pytest.mark.parametrize("workers", [0, 1])
def test_skip_bad_samples_skips_and_counts(bad_set, caplog, workers):
    name, root = bad_set
    cfg = _cfg(name, DATALOADER__SKIP_BAD_SAMPLES=True, DATALOADER__NUM_WORKERS=workers)
    loader = build_train_loader(cfg)
    with caplog.at_level(logging.WARNING, logger="uper_parsing.data.build"):
        batches = _file_names(loader, 4)  # 8 samples: two epochs of 4, b.jpg drawn twice
    assert all(len(b) == 2 for b in batches)
    assert str(root / "images/b.jpg") not in sum(batches, [])
    assert loader.skipped == 2
    assert _file_names(build_train_loader(cfg), 4) == batches  # still a function of the seed
    if workers == 0:  # workers log in their own processes
        assert f"Skipping bad sample {root}/images/b.jpg" in caplog.text


def _mapper(d: dict) -> dict:
    if d["file_name"].startswith("bad"):
        raise OSError(f"Cannot read {d['file_name']}")
    if d["file_name"] == "bug":
        raise KeyError("not a read error")
    return dict(d)


def test_replacements_come_from_the_same_group():
    names = ("bad0", "x1", "bad2", "bad3", "y4", "bad5", "bug")
    groups = ("x", "x", "y", "y", "y", "z", "w")  # e.g. multi-task sources
    dataset = MapDataset([{"file_name": n} for n in names], _mapper, skip_bad=True, groups=groups)
    assert dataset[0] == {"file_name": "x1", SKIPPED_KEY: ["bad0"]}
    assert dataset[2] == {"file_name": "y4", SKIPPED_KEY: ["bad2", "bad3"]}
    assert dataset[1] == {"file_name": "x1"}
    with pytest.raises(RuntimeError, match="all 1 samples of item 5's group are bad"):
        dataset[5]
    with pytest.raises(KeyError) as err:  # not a read error: a bug is not skipped
        dataset[6]
    assert err.value.__notes__ == ["(mapping item 6 of the dataset: bug)"]


def test_without_skipping_the_error_names_the_file(bad_set):
    name, root = bad_set
    with pytest.raises(TruncatedImageError, match=f"{root}/images/b.jpg"):
        _file_names(build_train_loader(_cfg(name)), 4)


def test_skipped_samples_hook_stores_and_logs_the_count(caplog):
    hook = hooks.SkippedSamples()
    hook.trainer = SimpleNamespace(data_loader=SimpleNamespace(skipped=3))
    with EventStorage(0) as storage:
        hook.trainer.storage = storage
        hook.after_step()
        assert storage.latest()["skipped_samples"][0] == 3
    with caplog.at_level(logging.WARNING, logger="uper_parsing.engine.hooks"):
        hook.after_train()
    assert "Skipped 3 bad training samples" in caplog.text
    assert SKIPPED_KEY == "skipped_file_names"
