"""Generated benchmark datasets: the shipped ADE20K and COCO panoptic recipes get a set in their
own label format and class counts, which their real mappers read; sets are re-used and depend on
the seed only."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from uper_parsing.config import get_cfg
from uper_parsing.data import DatasetCatalog, MetadataCatalog, build_mapper, read_sem_seg
from uper_parsing.data.datasets import generated
from uper_parsing.data.datasets.generated import register_generated_datasets
from uper_parsing.data.panoptic_utils import read_panoptic, read_panoptic_semantic

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ADE_CONFIG = "ade20k/upernet_R50_bs16_160k.yaml"
PANOPTIC_CONFIG = "coco_panoptic/panoptic_fpn_R50_1x.yaml"
SIZE = (96, 128)
NUM_IMAGES = 3


def _cfg(rel: str):
    cfg = get_cfg()
    cfg.merge_from_file(str(CONFIGS / rel))
    return cfg


def _forget(names) -> None:
    for name in names:
        for catalog in (DatasetCatalog, MetadataCatalog):
            if name in catalog:
                catalog.remove(name)


@contextlib.contextmanager
def _registered(rel: str, root: Path, **kwargs) -> Iterator[tuple]:
    """(cfg with DATASETS set to the generated set, (train, test) names, root); the names are
    removed from the catalogs on exit."""
    cfg = _cfg(rel)
    kwargs = {"num_images": NUM_IMAGES, "image_size": SIZE, **kwargs}
    names = register_generated_datasets(cfg, root, **kwargs)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = names[:1], names[1:]
    try:
        yield cfg, names, root
    finally:
        _forget(names)


@pytest.fixture(scope="module")
def ade_set(tmp_path_factory):
    with _registered(ADE_CONFIG, tmp_path_factory.mktemp("generated")) as generated_set:
        yield generated_set


@pytest.fixture(scope="module")
def panoptic_set(tmp_path_factory):
    with _registered(PANOPTIC_CONFIG, tmp_path_factory.mktemp("generated")) as generated_set:
        yield generated_set


def _files(folder: Path) -> dict[str, tuple[int, bytes]]:
    """{relative path: (mtime in ns, bytes)} of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _folder(root: Path, names: tuple[str, str]) -> Path:
    """The set folder of the registered names ``generated_<folder>_{train,test}``."""
    return root / names[0].removeprefix("generated_").removesuffix("_train")


def _contents(folder: Path) -> dict[str, bytes]:
    return {path: data for path, (_, data) in _files(folder).items()}


def test_semantic_set_is_read_as_ade20k(ade_set):
    cfg, (train, test), root = ade_set
    assert train == "generated_ade20k_k150_96x128_n3_seed0_v1_train"
    assert (root / "ade20k_k150_96x128_n3_seed0_v1" / "annotations").is_dir()
    dicts = DatasetCatalog.get(train)
    assert len(dicts) == NUM_IMAGES and DatasetCatalog.get(test) == dicts
    meta = MetadataCatalog.get(train)
    assert len(meta.stuff_classes) == cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 150
    assert (meta.reduce_zero_label, meta.ignore_label, meta.evaluator_type) == (
        True,
        255,
        "sem_seg",
    )
    for d in dicts:
        assert (d["height"], d["width"]) == SIZE
        stored = cv2.imread(d["sem_seg_file_name"], cv2.IMREAD_UNCHANGED)
        assert stored.dtype == np.uint8 and stored.max() <= 150
        labels = read_sem_seg(d["sem_seg_file_name"], meta, expected_hw=SIZE)
        np.testing.assert_array_equal(labels, np.where(stored == 0, 255, stored.astype(int) - 1))
        assert len(np.unique(labels)) > 3  # several regions, each of a random class
        image = cv2.imread(d["file_name"])
        assert image.shape == (*SIZE, 3) and image.std() > 10


def test_semantic_mapper_maps_a_training_dict(ade_set):
    cfg, (train, _), _ = ade_set
    out = build_mapper(cfg, is_train=True)(DatasetCatalog.get(train)[0])
    sem = out["sem_seg"]
    assert out["image"].shape[-2:] == sem.shape == (512, 512)
    valid = (sem >= 0) & (sem < 150) | (sem == 255)
    assert bool(valid.all()) and bool((sem < 150).any())


def _tight_box(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [
        int(xs.min()),
        int(ys.min()),
        int(xs.max() - xs.min() + 1),
        int(ys.max() - ys.min() + 1),
    ]


def test_panoptic_segments_agree_with_the_pngs(panoptic_set):
    cfg, (train, _), _ = panoptic_set
    meta = MetadataCatalog.get(train)
    assert len(meta.thing_classes) == cfg.MODEL.ROI_HEADS.NUM_CLASSES == 80
    assert len(meta.stuff_classes) == cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES - 1 == 53
    dicts = DatasetCatalog.get(train)
    assert [d["image_id"] for d in dicts] == [1, 2, 3]
    for d in dicts:
        ids = read_panoptic(d)  # every listed segment is in the PNG and vice versa
        expected_sem = np.full(SIZE, 255)
        things = [s for s in d["segments_info"] if s["isthing"]]
        assert 1 <= len(things) <= 15
        for s in d["segments_info"]:
            mask = ids == s["id"]
            assert s["area"] == mask.sum() and s["bbox"] == _tight_box(mask)
            limit = 80 if s["isthing"] else 53
            assert 0 <= s["category_id"] < limit and s["iscrowd"] in (0, 1)
            expected_sem[mask] = 0 if s["isthing"] else 1 + s["category_id"]
        np.testing.assert_array_equal(read_panoptic_semantic(d, meta), expected_sem)


def test_panoptic_mapper_maps_a_training_dict(panoptic_set):
    cfg, (train, _), _ = panoptic_set
    d = DatasetCatalog.get(train)[0]
    out = build_mapper(cfg, is_train=True)(d)
    inst, sem = out["instances"], out["sem_seg"]
    things = [s for s in d["segments_info"] if s["isthing"] and not s["iscrowd"]]
    assert len(inst["labels"]) == len(inst["boxes"]) == len(inst["masks"]) == len(things)
    assert inst["labels"].tolist() == [s["category_id"] for s in things]
    assert inst["masks"].shape[-2:] == sem.shape == out["image"].shape[-2:]
    assert bool(((sem <= 53) | (sem == 255)).all())
    assert bool((sem[inst["masks"].bool().any(dim=0)] == 0).all())


def test_second_call_reuses_the_folder(ade_set, monkeypatch):
    cfg, names, root = ade_set
    folder = root / "ade20k_k150_96x128_n3_seed0_v1"
    before = _files(folder)

    def fail(*args):
        raise AssertionError("the set was generated again")

    monkeypatch.setattr(generated, "_generate", fail)
    again = register_generated_datasets(cfg, root, num_images=NUM_IMAGES, image_size=SIZE)
    assert again == names
    assert _files(folder) == before
    assert sorted(p.name for p in root.iterdir()) == [folder.name]  # no temporary folder left


def test_same_seed_same_bytes(tmp_path):
    folders = []
    for root, seed in ((tmp_path / "a", 1), (tmp_path / "b", 1), (tmp_path / "c", 2)):
        with _registered(PANOPTIC_CONFIG, root, seed=seed) as (_, names, _):
            folders.append(_folder(root, names))
    a, b, c = (_contents(f) for f in folders)
    assert a == b
    assert a["images/generated_000000.jpg"] != c["images/generated_000000.jpg"]


def test_process_pool_writes_the_same_set(tmp_path, monkeypatch):
    monkeypatch.setattr(generated, "_IMAGES_PER_WORKER", 1)  # 3 images: a pool of 2 or more
    if generated._num_workers(NUM_IMAGES) < 2:
        pytest.skip("a single CPU: no pool")
    with _registered(ADE_CONFIG, tmp_path / "pool", seed=3) as (_, names, _):
        pooled = _contents(_folder(tmp_path / "pool", names))
    monkeypatch.setattr(generated, "_IMAGES_PER_WORKER", 1000)
    with _registered(ADE_CONFIG, tmp_path / "serial", seed=3) as (_, names, _):
        serial = _contents(_folder(tmp_path / "serial", names))
    assert pooled == serial


def test_name_registered_for_another_root_is_an_error(ade_set, tmp_path):
    cfg, _, _ = ade_set
    with pytest.raises(ValueError, match="already registered with image_root"):
        register_generated_datasets(cfg, tmp_path, num_images=NUM_IMAGES, image_size=SIZE)


@pytest.mark.parametrize(("rel", "size"), [(ADE_CONFIG, (512, 683)), (PANOPTIC_CONFIG, (480, 640))])
def test_default_image_size_is_the_datasets(rel, size, tmp_path):
    with _registered(rel, tmp_path, num_images=1, image_size=None) as (_, (train, _), _):
        d = DatasetCatalog.get(train)[0]
        assert (d["height"], d["width"]) == size


def test_unsupported_meta_architecture(tmp_path):
    cfg = _cfg(ADE_CONFIG)
    cfg.MODEL.META_ARCHITECTURE = "UnifiedPerceptualParser"
    with pytest.raises(
        ValueError, match="'UnifiedPerceptualParser'.*PanopticFPN, SemanticSegmentor"
    ):
        register_generated_datasets(cfg, tmp_path)
    assert not any(tmp_path.iterdir())
