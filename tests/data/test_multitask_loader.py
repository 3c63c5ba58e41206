"""Source-aware multi-task training batches: one source per batch, drawn in proportion to size."""

import itertools

import pytest
from _multitask_helpers import prepare_tiny_multitask

from uper_parsing.config import get_cfg
from uper_parsing.data import (
    DatasetCatalog,
    SourceBatchSampler,
    build_multitask_train_loader,
    build_train_loader,
)
from uper_parsing.data.datasets import DATASETS_ENV
from uper_parsing.tasks import TASK_REGISTRY

SOURCES = {"a": range(0, 60), "b": range(60, 90), "c": range(90, 100)}


def _source_of(index):
    return next(name for name, ids in SOURCES.items() if index in ids)


def test_source_frequencies_follow_sizes():
    n = 3000
    sampler = SourceBatchSampler(SOURCES, 4, seed=11, rank=0, world_size=1)
    counts = {name: 0 for name in SOURCES}
    for batch in itertools.islice(sampler, n):
        (source,) = {_source_of(i) for i in batch}  # one source per batch
        counts[source] += 1
    expected = {name: n * len(ids) / 100 for name, ids in SOURCES.items()}
    chi2 = sum((counts[k] - expected[k]) ** 2 / expected[k] for k in SOURCES)
    assert chi2 < 13.8  # 2 degrees of freedom, p = 0.001


def test_ranks_draw_the_same_sources_and_disjoint_images():
    ranks = [SourceBatchSampler(SOURCES, 3, seed=4, rank=r, world_size=2) for r in range(2)]
    seen = {name: [] for name in SOURCES}
    for b0, b1 in itertools.islice(zip(*ranks), 200):
        (s0,), (s1,) = {_source_of(i) for i in b0}, {_source_of(i) for i in b1}
        assert s0 == s1 and len(b0) == len(b1) == 3
        seen[s0].extend(b0 + b1)
    a = seen["a"][:60]  # the first pass over a source visits each of its images once
    assert sorted(a) == list(SOURCES["a"])
    other_seed = SourceBatchSampler(SOURCES, 3, seed=5, rank=0, world_size=2)
    first = [_source_of(b[0]) for b in itertools.islice(ranks[0], 50)]
    assert first != [_source_of(b[0]) for b in itertools.islice(other_seed, 50)]


def test_sampler_rejects_empty_sources():
    with pytest.raises(ValueError, match="without images: \\['b'\\]"):
        SourceBatchSampler({"a": [0], "b": []}, 2, seed=0, rank=0, world_size=1)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mt_loader")
    prepare_tiny_multitask(root)
    return root


def _cfg(train, workers=0, batch=4):
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = (train,)
    cfg.INPUT.DATASET_MAPPER_NAME = "multitask"
    cfg.INPUT.RESIZE_SCALE = [128, 64]
    cfg.INPUT.CROP.SIZE = [48, 48]
    cfg.SOLVER.IMS_PER_BATCH = batch
    cfg.DATALOADER.NUM_WORKERS = workers
    cfg.SEED = 7
    return cfg


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_batches_come_from_one_source(tiny_root, monkeypatch, workers):
    monkeypatch.setenv(DATASETS_ENV, str(tiny_root))
    train, _ = prepare_tiny_multitask(tiny_root)
    cfg = _cfg(train, workers=workers)
    batches = list(itertools.islice(build_train_loader(cfg), 8))  # dispatches on "sources"
    for batch in batches:
        assert len(batch) == 4 and len({d["source"] for d in batch}) == 1
        tasks = batch[0]["tasks"]
        assert all(d["tasks"] == tasks for d in batch)
        assert all(d["image"].shape == (3, 48, 48) for d in batch)
        for task in {"object", "part", "material"} & set(tasks):
            assert all(d[task].shape == (48, 48) for d in batch)
    # the same source sequence as the sampler draws, on each of two simulated ranks
    sizes = {"scenes": 8, "materials": 4, "textures": 6}
    dicts = DatasetCatalog.get(train)
    ids = {s: [i for i, d in enumerate(dicts) if d["source"] == s] for s in sizes}
    sampler = SourceBatchSampler(ids, 4, seed=7, rank=0, world_size=1)
    want = [sampler.sources[k] for k in itertools.islice(sampler.source_stream(), 8)]
    assert [b[0]["source"] for b in batches] == want
    if workers == 0:
        per_rank = [
            list(itertools.islice(build_multitask_train_loader(cfg, rank=r, world_size=2), 6))
            for r in range(2)
        ]
        for b0, b1 in zip(*per_rank):
            assert len(b0) == len(b1) == 2 and b0[0]["source"] == b1[0]["source"]
            assert not {d["file_name"] for d in b0} & {d["file_name"] for d in b1}


def test_second_phase_draws_only_texture_batches(tiny_root, monkeypatch):
    monkeypatch.setenv(DATASETS_ENV, str(tiny_root))
    train, _ = prepare_tiny_multitask(tiny_root)
    cfg = _cfg(train)
    cfg.MODEL.MULTITASK.TEXTURE_TRAINING = "second_phase"
    # the multi-task record's loader passes the tasks its model trains to the data code
    record = TASK_REGISTRY["multitask"]
    for batch in itertools.islice(record.build_train_loader(cfg), 6):
        assert all(d["tasks"] == ["texture"] for d in batch)
    cfg.MODEL.MULTITASK.TEXTURE_TRAINING = "joint"
    cfg.MODEL.MULTITASK.TASKS = ["object", "scene"]  # a model without material / texture heads
    for batch in itertools.islice(record.build_train_loader(cfg), 12):
        assert {"object", "scene"} & set(batch[0]["tasks"])
    only = build_multitask_train_loader(cfg, tasks=["texture"])  # data code: told, not reading
    assert all(d["tasks"] == ["texture"] for d in next(iter(only)))
