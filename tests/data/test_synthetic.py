import json
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest

from uper_parsing.data import (
    DatasetCatalog,
    MetadataCatalog,
    SyntheticParams,
    read_image,
    read_sem_seg,
    register_synthetic_scenes,
)
from uper_parsing.data.datasets import DATASETS_ENV
from uper_parsing.data.datasets.synthetic import (
    SCENE_TYPES,
    SYNTHETIC_CLASS_NAMES,
    SYNTHETIC_CLASSES,
    SYNTHETIC_PARTS,
    generate_synthetic_scenes,
    prepare_synthetic_scenes,
    render_scene,
)

TINY = SyntheticParams(seed=1, image_size=64, num_train=6, num_val=2)
THING_IDS = [i + 1 for i, c in enumerate(SYNTHETIC_CLASSES) if c.kind == "thing"]


@pytest.fixture
def registered(monkeypatch, tmp_path):
    """Register synthetic sets under tmp_path; forget them afterwards."""
    monkeypatch.setenv(DATASETS_ENV, str(tmp_path))
    names = []

    def register(prefix, params):
        names.extend(register_synthetic_scenes(prefix, params=params))
        return names[-2:]

    yield register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("size", [64, (48, 80)])
def test_render_is_deterministic_and_consistent(size):
    for index in range(6):
        a, b = render_scene(7, index, size), render_scene(7, index, size)
        for key in ("image", "object", "instance", "part", "material"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
        hw = (size, size) if isinstance(size, int) else size
        assert a.image.shape == (*hw, 3) and a.image.dtype == np.uint8
        assert 0 <= a.scene < len(SCENE_TYPES) and a.object.max() <= len(SYNTHETIC_CLASSES)
        things = np.isin(a.object, THING_IDS)
        assert ((a.instance > 0) == things).all()  # exactly the thing pixels have instances
        assert ((a.part > 0) == things).all() and a.part.max() <= len(SYNTHETIC_PARTS)
        for info in a.instances:  # each instance has one class, as listed
            assert set(np.unique(a.object[a.instance == info.id])) == {info.class_id}
        assert {i.id for i in a.instances} == set(np.unique(a.instance)) - {0}
    assert not np.array_equal(render_scene(7, 0, 64).image, render_scene(7, 1, 64).image)


def test_generation_is_byte_identical(tmp_path):
    generate_synthetic_scenes(tmp_path / "a", TINY)
    generate_synthetic_scenes(tmp_path / "b", TINY)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) == 2 * (6 + 2) + 1 and a == b


def test_prepare_writes_meta_and_regenerates_on_change(tmp_path):
    folder = prepare_synthetic_scenes(tmp_path / "set", TINY)
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["params"]["image_size"] == 64 and meta["generator_version"] >= 1
    assert meta["classes"] == list(SYNTHETIC_CLASS_NAMES)
    label = folder / "annotations/training/synthetic_train_00000.png"
    stamp = label.stat().st_mtime_ns
    prepare_synthetic_scenes(folder, TINY)  # up to date: nothing rewritten
    assert label.stat().st_mtime_ns == stamp
    bigger = SyntheticParams(seed=1, image_size=64, num_train=7, num_val=2)
    prepare_synthetic_scenes(folder, bigger)
    assert len(list((folder / "images/training").iterdir())) == 7
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == ["set"]


def _prepare_in_child(folder: str) -> None:
    prepare_synthetic_scenes(folder, TINY)


def test_concurrent_prepare(tmp_path):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_prepare_in_child, args=(str(tmp_path / "set"),)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert _files(tmp_path / "set") == _files(prepare_synthetic_scenes(tmp_path / "ref", TINY))
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == [
        "ref",
        "set",
    ]


def test_registration_is_lazy(registered, tmp_path):
    train, val = registered("synthetic_lazy", TINY)
    assert (train, val) == ("synthetic_lazy_sem_seg_train", "synthetic_lazy_sem_seg_val")
    assert not (tmp_path / "synthetic_lazy").exists()
    meta = MetadataCatalog.get(train)
    assert meta.stuff_classes == list(SYNTHETIC_CLASS_NAMES) and meta.reduce_zero_label
    assert meta.image_root == str(tmp_path / "synthetic_lazy/images/training")
    dicts = DatasetCatalog.get(val)
    assert len(dicts) == 2 and (dicts[0]["height"], dicts[0]["width"]) == (64, 64)
    assert len(DatasetCatalog.get(train)) == 6


def test_builtin_metadata():
    meta = MetadataCatalog.get("synthetic_scenes_sem_seg_train")
    assert meta.stuff_classes == list(SYNTHETIC_CLASS_NAMES)
    assert len(meta.stuff_colors) == len(meta.stuff_classes) == 10
    assert meta.evaluator_type == "sem_seg" and meta.ignore_label == 255
    assert meta.reduce_zero_label is True


def _pixels(dicts, metadata):
    images = np.concatenate([read_image(d["file_name"]).reshape(-1, 3) for d in dicts])
    labels = np.concatenate([read_sem_seg(d["sem_seg_file_name"], metadata).ravel() for d in dicts])
    return images.astype(np.float32), labels.astype(np.int64)


def _nearest_colour_miou(train_dicts, val_dicts, metadata) -> tuple[float, np.ndarray]:
    k = len(metadata.stuff_classes)
    x, y = _pixels(train_dicts, metadata)
    valid = y != metadata.ignore_label
    freq = np.bincount(y[valid], minlength=k) / valid.sum()
    means = np.stack([x[y == c].mean(0) for c in range(k)])
    xv, yv = _pixels(val_dicts, metadata)
    pred = ((xv[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)
    valid = yv != metadata.ignore_label
    cm = np.bincount(yv[valid] * k + pred[valid], minlength=k * k).reshape(k, k)
    iou = np.diag(cm) / (cm.sum(0) + cm.sum(1) - np.diag(cm))
    return float(np.nanmean(iou) * 100), freq


def test_colour_alone_does_not_solve_the_task(registered):
    # The default validation set (its scenes do not depend on num_train) and 150 train scenes.
    params = SyntheticParams(seed=0, image_size=128, num_train=150, num_val=100)
    train, val = registered("synthetic_colour", params)
    miou, freq = _nearest_colour_miou(
        DatasetCatalog.get(train), DatasetCatalog.get(val), MetadataCatalog.get(val)
    )
    print(f"nearest class-mean colour classifier: {miou:.1f} mIoU on val")
    assert miou < 40
    assert freq.min() > 0.015  # every class is reasonably represented


def test_prepare_refuses_to_replace_foreign_folder(tmp_path):
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "my_notes.txt").write_text("not generated")
    with pytest.raises(FileExistsError, match="meta.json"):
        prepare_synthetic_scenes(tmp_path / "set", TINY)
    assert (tmp_path / "set" / "my_notes.txt").exists()
