import itertools

import pytest
import torch

from uper_parsing.config import get_cfg
from uper_parsing.data import (
    DatasetCatalog,
    MetadataCatalog,
    build_test_loader,
    build_train_loader,
    get_dataset_dicts,
    train_stream,
)
from uper_parsing.data.samplers import GroupedBatchSampler
from uper_parsing.utils import comm


def _cfg(train_name, workers=0, batch=4):
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = (train_name,)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = len(MetadataCatalog.get(train_name).stuff_classes)
    cfg.SOLVER.IMS_PER_BATCH = batch
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.INPUT.RESIZE_SCALE = [128, 64]
    cfg.INPUT.CROP.SIZE = [48, 48]
    cfg.INPUT.MIN_SIZE_TEST = 0
    cfg.SEED = 5
    return cfg


def _first_batches(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_train_loader_batches(tiny_synthetic):
    train, _ = tiny_synthetic
    batches = _first_batches(build_train_loader(_cfg(train)), 6)  # more than one epoch
    for batch in batches:
        assert isinstance(batch, list) and len(batch) == 4
        assert all(
            d["image"].shape == (3, 48, 48) and d["sem_seg"].shape == (48, 48) for d in batch
        )
    assert max(int(d["sem_seg"][d["sem_seg"] != 255].max()) for b in batches for d in b) < 10


def test_train_loader_with_workers_is_deterministic(tiny_synthetic):
    train, _ = tiny_synthetic
    cfg = _cfg(train, workers=2)
    first, second = (_first_batches(build_train_loader(cfg), 3) for _ in range(2))
    for a, b in zip(first, second):
        assert [d["file_name"] for d in a] == [d["file_name"] for d in b]
        for x, y in zip(a, b):  # photometric and geometric randomness repeat too
            assert torch.equal(x["image"], y["image"]) and torch.equal(x["sem_seg"], y["sem_seg"])
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = False
    plain = _first_batches(build_train_loader(cfg), 2)
    assert all(len(b) == 4 for b in plain)


def test_batch_must_divide_across_processes(tiny_synthetic, monkeypatch):
    train, _ = tiny_synthetic
    monkeypatch.setattr(comm, "get_world_size", lambda: 3)
    with pytest.raises(ValueError, match="IMS_PER_BATCH"):
        build_train_loader(_cfg(train, batch=4))


def test_test_loader_covers_dataset_once(tiny_synthetic):
    train, val = tiny_synthetic
    loader = build_test_loader(_cfg(train), val)
    seen = []
    for batch in loader:
        assert len(batch) == 1 and "sem_seg" not in batch[0]
        d = batch[0]
        assert d["image"].shape == (3, d["height"], d["width"]) == (3, 64, 64)
        seen.append(d["file_name"])
    assert seen == [d["file_name"] for d in DatasetCatalog.get(val)]


def test_aspect_ratio_grouping():
    sizes = [(10, 20), (20, 10), (10, 10), (30, 10), (5, 50), (20, 40)]  # (h, w)
    groups = [int(h > w) for h, w in sizes]
    batches = list(itertools.islice(GroupedBatchSampler(range(6), groups, 2), 3))
    assert batches == [[0, 2], [1, 3], [4, 5]]  # each bucket yields when it holds two


def _same_batches(a, b) -> None:
    assert len(a) == len(b)
    for x_batch, y_batch in zip(a, b):
        assert [d["file_name"] for d in x_batch] == [d["file_name"] for d in y_batch]
        for x, y in zip(x_batch, y_batch):
            assert torch.equal(x["image"], y["image"]) and torch.equal(x["sem_seg"], y["sem_seg"])


@pytest.mark.parametrize("grouping", [True, False])
def test_stream_is_a_function_of_the_batch_number(tiny_synthetic, grouping):
    """The same batches (files, augmentations) with 0 or 2 workers, and from batch k on when the
    stream starts at k: what a resumed run reads."""
    train, _ = tiny_synthetic
    cfg = _cfg(train)
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = grouping
    reference = _first_batches(build_train_loader(cfg), 5)
    cfg.DATALOADER.NUM_WORKERS = 2
    _same_batches(_first_batches(build_train_loader(cfg), 5), reference)
    loader = build_train_loader(cfg)
    stream = train_stream(loader)
    assert stream.state_dict() == {"seed": 5, "batch_size": 4, "world_size": 1}
    stream.start = 3
    _same_batches(_first_batches(loader, 2), reference[3:])


def test_get_dataset_dicts_checks(tiny_synthetic, fresh_name):
    train, val = tiny_synthetic
    assert len(get_dataset_dicts([train, val])) == 28
    with pytest.raises(KeyError, match="not registered"):
        get_dataset_dicts(["missing_dataset"])
    DatasetCatalog.register(fresh_name, lambda: [{"file_name": "x"}])
    MetadataCatalog.get(fresh_name).set(stuff_classes=["a"], ignore_label=255)
    with pytest.raises(ValueError, match="stuff_classes"):
        get_dataset_dicts([train, fresh_name])
    # panoptic sets: equal stuff, same number of different things
    for name, things in ((f"{fresh_name}_a", ["car", "dog"]), (f"{fresh_name}_b", ["car", "cat"])):
        DatasetCatalog.register(name, lambda: [{"file_name": "x"}])
        MetadataCatalog.get(name).set(stuff_classes=["sky"], thing_classes=things)
    with pytest.raises(ValueError, match="thing_classes.*'dog'.*'cat'"):
        get_dataset_dicts([f"{fresh_name}_a", f"{fresh_name}_b"])
    for name in (f"{fresh_name}_a", f"{fresh_name}_b"):
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_loader_workers_are_forked_even_where_spawn_is_the_default(tiny_synthetic, monkeypatch):
    """Processes started by ``launch`` are spawned and default to spawning their own children;
    loader workers fork anyway (no fresh interpreter per worker), and load the same data."""
    import multiprocessing

    train, val = tiny_synthetic
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none=False: "spawn")
    cfg = _cfg(train, workers=1)
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = False  # the DataLoader itself, not a grouping wrapper
    train_loader = build_train_loader(cfg)
    test_loader = build_test_loader(cfg, val)
    for loader in (train_loader, test_loader):
        assert loader.multiprocessing_context.get_start_method() == "fork"
    assert len(next(iter(train_loader))) == 4
    assert [b[0]["file_name"] for b in test_loader] == [
        b[0]["file_name"] for b in build_test_loader(_cfg(train), val)
    ]
    cfg.DATALOADER.NUM_WORKERS = 0
    assert build_test_loader(cfg, val).multiprocessing_context is None
