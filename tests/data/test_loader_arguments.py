"""The loader builders called as detectron2's are: with a cfg, or with explicit ``dataset`` /
``mapper`` / ``sampler`` arguments and no cfg, the two giving the same batches."""

from __future__ import annotations

import itertools

import pytest
import torch

from uper_parsing.config import get_cfg
from uper_parsing.data import (
    DatasetCatalog,
    MetadataCatalog,
    SemSegDatasetMapper,
    build_test_loader,
    build_train_loader,
    train_stream,
)
from uper_parsing.data.samplers import TrainingSampler


def _cfg(train_name: str):
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = (train_name,)
    cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES = len(MetadataCatalog.get(train_name).stuff_classes)
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.INPUT.RESIZE_SCALE = [128, 64]
    cfg.INPUT.CROP.SIZE = [48, 48]
    cfg.INPUT.MIN_SIZE_TEST = 0
    cfg.SEED = 5
    return cfg


def _take(loader, n):
    return list(itertools.islice(iter(loader), n))


def _assert_same(a, b):
    for x_batch, y_batch in zip(a, b, strict=True):
        assert [d["file_name"] for d in x_batch] == [d["file_name"] for d in y_batch]
        for x, y in zip(x_batch, y_batch, strict=True):
            assert torch.equal(x["image"], y["image"]) and torch.equal(x["sem_seg"], y["sem_seg"])


def test_explicit_train_arguments_give_the_cfg_batches(tiny_synthetic):
    train, _ = tiny_synthetic
    cfg = _cfg(train)
    from_cfg = _take(build_train_loader(cfg), 3)
    explicit = build_train_loader(
        dataset=DatasetCatalog.get(train),
        mapper=SemSegDatasetMapper(cfg, True),
        total_batch_size=4,
        seed=5,
    )
    _assert_same(_take(explicit, 3), from_cfg)
    assert train_stream(explicit).state_dict() == {"seed": 5, "batch_size": 4, "world_size": 1}


def test_cfg_with_dataset_and_sampler_overrides(tiny_synthetic):
    train, _ = tiny_synthetic
    cfg = _cfg(train)
    cfg.DATALOADER.ASPECT_RATIO_GROUPING = False
    dicts = DatasetCatalog.get(train)[:3]
    in_order = TrainingSampler(len(dicts), shuffle=False, seed=0, rank=0, world_size=1)
    loader = build_train_loader(cfg, dataset=dicts, sampler=in_order)
    names = [d["file_name"] for batch in _take(loader, 3) for d in batch]
    assert names == [dicts[i % 3]["file_name"] for i in range(12)]  # the sampler's order


def test_train_loader_without_mapper_yields_items():
    items = [{"file_name": str(i), "height": 1, "width": 2} for i in range(5)]
    loader = build_train_loader(
        items, mapper=None, total_batch_size=2, aspect_ratio_grouping=False, seed=1
    )
    batches = _take(loader, 5)
    assert all(len(b) == 2 for b in batches)
    names = [d["file_name"] for b in batches for d in b]
    assert sorted(names[:5]) == [str(i) for i in range(5)]  # one shuffled epoch, then the next
    assert batches[0][0] == items[int(names[0])]  # the dicts themselves, unmapped


def test_train_loader_argument_errors():
    items = [{"file_name": "a", "height": 1, "width": 1}] * 4
    with pytest.raises(ValueError, match="IMS_PER_BATCH.* 3 .*processes \\(2\\)"):
        build_train_loader(items, mapper=None, total_batch_size=3, world_size=2, seed=0)
    with pytest.raises(ValueError, match="a sampler or a batch_sampler, not both"):
        build_train_loader(
            items, mapper=None, total_batch_size=2, sampler=range(4), batch_sampler=[[0, 1]]
        )
    with pytest.raises(ValueError, match="'height' / 'width'.*ASPECT_RATIO_GROUPING"):
        build_train_loader([{"file_name": "x"}], mapper=None, total_batch_size=1, seed=0)


def test_explicit_test_loader(tiny_synthetic):
    train, val = tiny_synthetic
    cfg = _cfg(train)
    from_cfg = [b[0]["file_name"] for b in build_test_loader(cfg, val)]
    dicts = DatasetCatalog.get(val)
    explicit = build_test_loader(dataset=dicts, mapper=SemSegDatasetMapper(cfg, False))
    assert [b[0]["file_name"] for b in explicit] == from_cfg == [d["file_name"] for d in dicts]
    two = build_test_loader(dicts, mapper=None, sampler=[1, 0])
    assert [b[0]["file_name"] for b in two] == [dicts[1]["file_name"], dicts[0]["file_name"]]
