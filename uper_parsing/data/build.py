"""Train and test data loaders (detectron2's ``build_detection_{train,test}_loader``)."""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import pickle
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from ..utils import comm
from ..utils.env import derived_seed, seed_all_rng
from .catalog import DatasetCatalog, MetadataCatalog
from .mappers import build_mapper
from .samplers import (
    BatchSampler,
    GroupedBatchSampler,
    InferenceSampler,
    SourceBatchSampler,
    TrainingSampler,
)

__all__ = [
    "get_dataset_dicts",
    "build_train_loader",
    "build_multitask_train_loader",
    "build_test_loader",
    "trivial_batch_collator",
    "worker_init_reset_seed",
    "SerializedList",
    "MapDataset",
    "TrainStream",
    "train_stream",
]

logger = logging.getLogger(__name__)

# Metadata that every dataset trained on together must share.
_SHARED_METADATA = (
    "stuff_classes",
    "thing_classes",
    "ignore_label",
    "reduce_zero_label",
    "label_id_map",
)
_TRAIN_SAMPLERS = {"TrainingSampler": TrainingSampler}
# Metadata that multi-task datasets trained on together must share (one reader, one model).
_SHARED_MULTITASK_METADATA = (
    "object_classes",
    "part_classes",
    "object_parts",
    "material_classes",
    "scene_classes",
    "texture_classes",
    "ignore_label",
    "label_numbers",
    "ignored_numbers",
)


def get_dataset_dicts(names: str | Sequence[str]) -> list[dict]:
    """Concatenated dataset dicts of ``names``; each must be non-empty, and their metadata must
    agree on classes and label mapping (one label reader serves them all)."""
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise ValueError("No dataset names given")
    dicts = []
    for name in names:
        part = DatasetCatalog.get(name)
        if not part:
            raise ValueError(f"Dataset '{name}' is empty")
        logger.info("Dataset '%s': %d images", name, len(part))
        dicts.extend(part)
    _check_metadata_consistency(names)
    return dicts


def _check_metadata_consistency(
    names: Sequence[str], keys: Sequence[str] = _SHARED_METADATA
) -> None:
    first = MetadataCatalog.get(names[0])
    for name in names[1:]:
        other = MetadataCatalog.get(name)
        for key in keys:
            if first.get(key) != other.get(key):
                raise ValueError(
                    f"Datasets '{names[0]}' and '{name}' disagree on metadata '{key}': "
                    f"{first.get(key)!r} vs {other.get(key)!r}"
                )


class SerializedList:
    """A list of picklable objects stored as one numpy byte buffer, so that data-loader workers
    do not copy it page by page through reference counting (detectron2's trick)."""

    def __init__(self, items: Sequence[Any]) -> None:
        blobs = [np.frombuffer(pickle.dumps(x, protocol=-1), dtype=np.uint8) for x in items]
        self._ends = np.cumsum([len(b) for b in blobs], dtype=np.int64)
        self._buffer = np.concatenate(blobs) if blobs else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index: int) -> Any:
        start = int(self._ends[index - 1]) if index > 0 else 0
        return pickle.loads(memoryview(self._buffer[start : int(self._ends[index])]))


class MapDataset(Dataset):
    """``dataset[i] = mapper(items[i])``."""

    def __init__(self, items: Sequence[Any], mapper: Callable[[Any], Any]) -> None:
        self._items = items
        self._mapper = mapper

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Any:
        return self._mapper(self._items[index])


class TrainStream(IterableDataset):
    """This process's training batches: the batches of indices of ``batch_sampler`` from batch
    ``start`` on, each item mapped with Python's, NumPy's and torch's generators seeded from
    (``seed``, rank, batch number, position in the batch).

    The stream is therefore a function of the seed and the batch number alone: the same with any
    number of loader workers (worker w of n maps the batches j = start + w mod n, and the loader
    takes the workers in turn from worker 0), and a run resumed after k iterations continues it
    exactly by setting ``start`` to k (``DefaultTrainer.resume_or_load``). ``state_dict`` is what
    a checkpoint keeps of it.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_sampler: Iterable[list[int]],
        *,
        seed: int,
        batch_size: int,
        world_size: int | None = None,
        rank: int | None = None,
    ) -> None:
        self._dataset = dataset
        self._batch_sampler = batch_sampler
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.world_size = comm.get_world_size() if world_size is None else int(world_size)
        self.rank = comm.get_rank() if rank is None else int(rank)
        self.start = 0

    def state_dict(self) -> dict[str, int]:
        """The seed and the layout the stream depends on (the batch number is the iteration)."""
        return {"seed": self.seed, "batch_size": self.batch_size, "world_size": self.world_size}

    def __iter__(self) -> Iterator[list[Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        batches = itertools.islice(iter(self._batch_sampler), self.start, None)
        for j, batch in enumerate(batches, self.start):
            if (j - self.start) % workers == worker:  # the loader takes worker 0 first
                yield [self._map(j, i, index) for i, index in enumerate(batch)]

    def _map(self, batch_number: int, position: int, index: int) -> Any:
        seed_all_rng(derived_seed(self.seed, self.rank, batch_number, position))
        return self._dataset[index]


def train_stream(loader: Any) -> TrainStream | None:
    """The ``TrainStream`` a training loader of ``build_train_loader`` reads (None for other
    iterables, e.g. a benchmark's repeated batch)."""
    dataset = getattr(loader, "dataset", None)
    return dataset if isinstance(dataset, TrainStream) else None


def trivial_batch_collator(batch: list[Any]) -> list[Any]:
    """Keep a batch as the list of its dicts."""
    return batch


def _identity(x: Any) -> Any:
    return x


def worker_init_reset_seed(worker_id: int) -> None:
    """Seed numpy, ``random`` and torch in a loader worker from torch's per-worker seed (which the
    loader derives deterministically from its generator and the worker id)."""
    seed = torch.initial_seed() % 2**31
    np.random.seed(seed)
    random.seed(seed)
    torch.manual_seed(seed)


def _worker_context(num_workers: int) -> str | None:
    """Start method of loader workers: "fork" where the platform has it.

    A process started by ``launch`` (``--num-gpus``) is spawned, and Python makes "spawn" the
    default start method inside it, so its loader workers would each start a fresh interpreter
    and import everything again (about 40 s before the first batch of a 2-GPU evaluation).
    Forking is what a single process and torchrun's processes use anyway; workers never touch
    CUDA.
    """
    if num_workers > 0 and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return None


def _worker_options(cfg: Any) -> dict[str, Any]:
    """DataLoader arguments of the training loaders: ``DATALOADER.NUM_WORKERS`` persistent
    workers (no per-worker seeding: ``TrainStream`` seeds every item by its position); batches
    in pinned memory when ``DATALOADER.PIN_MEMORY`` and CUDA is present (the model's copies are
    then asynchronous)."""
    workers = cfg.DATALOADER.NUM_WORKERS
    return {
        "pin_memory": bool(cfg.DATALOADER.PIN_MEMORY) and torch.cuda.is_available(),
        "num_workers": workers,
        "persistent_workers": workers > 0,
        "multiprocessing_context": _worker_context(workers),
    }


def _images_per_worker(cfg: Any, world_size: int | None = None) -> int:
    total = cfg.SOLVER.IMS_PER_BATCH
    world = comm.get_world_size() if world_size is None else world_size
    if total <= 0 or total % world != 0:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH ({total}) must be a positive multiple of the number of "
            f"processes ({world})"
        )
    return total // world


def build_train_loader(cfg: Any, mapper: Callable[[dict], dict] | None = None) -> Iterable:
    """Infinite loader of training batches (``list[dict]`` of ``IMS_PER_BATCH // world_size``).

    Dataset dicts of ``DATASETS.TRAIN`` are mapped by ``mapper`` (default: ``build_mapper(cfg,
    True)``) in ``DATALOADER.NUM_WORKERS`` workers, in the order of a seeded ``TrainingSampler``
    (``SEED``, or a shared random seed when negative) sharded by rank, and grouped by aspect ratio
    when ``DATALOADER.ASPECT_RATIO_GROUPING``. Multi-task datasets (metadata with ``sources``)
    go to ``build_multitask_train_loader``.
    """
    names = cfg.DATASETS.TRAIN
    if len(names) and MetadataCatalog.get(names[0]).get("sources") is not None:
        return build_multitask_train_loader(cfg, mapper)
    batch_size = _images_per_worker(cfg)
    dicts = get_dataset_dicts(cfg.DATASETS.TRAIN)
    mapper = mapper if mapper is not None else build_mapper(cfg, True)
    seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
    name = cfg.DATALOADER.SAMPLER_TRAIN
    if name not in _TRAIN_SAMPLERS:
        raise ValueError(
            f"DATALOADER.SAMPLER_TRAIN = {name!r} is not one of {list(_TRAIN_SAMPLERS)}"
        )
    sampler = _TRAIN_SAMPLERS[name](len(dicts), shuffle=True, seed=seed)
    if cfg.DATALOADER.ASPECT_RATIO_GROUPING:
        batches = GroupedBatchSampler(sampler, [_is_portrait(d) for d in dicts], batch_size)
    else:
        batches = BatchSampler(sampler, batch_size)
    dataset = MapDataset(SerializedList(dicts), mapper)
    stream = TrainStream(dataset, batches, seed=seed, batch_size=batch_size)
    return DataLoader(stream, batch_size=None, collate_fn=_identity, **_worker_options(cfg))


def _is_portrait(d: dict) -> int:
    """1 for an image taller than wide, 0 otherwise (the dataset dict's ``height`` / ``width``),
    the group of ``DATALOADER.ASPECT_RATIO_GROUPING``."""
    if "height" not in d or "width" not in d:
        raise ValueError(
            f"Dataset dict of {d.get('file_name')} has no 'height' / 'width', which "
            "DATALOADER.ASPECT_RATIO_GROUPING groups by: add them when registering the dataset, "
            "or set DATALOADER.ASPECT_RATIO_GROUPING False"
        )
    return int(d["height"] > d["width"])


def source_indices(dicts: Sequence[dict]) -> dict[str, list[int]]:
    """{source name: indices of its dicts}, sources in order of first appearance."""
    out: dict[str, list[int]] = {}
    for i, d in enumerate(dicts):
        if "source" not in d:
            raise ValueError(f"Multi-task dataset dict of {d.get('file_name')} has no 'source'")
        out.setdefault(d["source"], []).append(i)
    return out


def _with_trainable_tasks(dicts: list[dict], cfg: Any) -> list[dict]:
    """The images that label at least one task the model trains: ``MODEL.MULTITASK.TASKS``, or
    only "texture" when ``MODEL.MULTITASK.TEXTURE_TRAINING`` is "second_phase"."""
    multitask = cfg.MODEL.MULTITASK
    trainable = (
        {"texture"} if multitask.TEXTURE_TRAINING == "second_phase" else set(multitask.TASKS)
    )
    kept = [d for d in dicts if trainable.intersection(d.get("tasks", ()))]
    if not kept:
        raise ValueError(
            f"No image of {list(cfg.DATASETS.TRAIN)} labels a task the model trains ({trainable})"
        )
    if len(kept) < len(dicts):
        logger.info("Training on %d of %d images: the rest label none of %s", len(kept),
                    len(dicts), sorted(trainable))  # fmt: skip
    return kept


def build_multitask_train_loader(
    cfg: Any,
    mapper: Callable[[dict], dict] | None = None,
    *,
    rank: int | None = None,
    world_size: int | None = None,
) -> Iterable:
    """Infinite loader of multi-task training batches: ``list[dict]`` of
    ``IMS_PER_BATCH // world_size``, every batch from one source.

    The source of each step is drawn in proportion to its number of images with a generator
    seeded by ``SEED`` (or a shared random seed), the same on every process; each process maps
    its own images of that source (``SourceBatchSampler``) in ``DATALOADER.NUM_WORKERS`` workers.
    The datasets of ``DATASETS.TRAIN`` must share their multi-task metadata.

    Args:
        mapper: default ``build_mapper(cfg, True)`` (``INPUT.DATASET_MAPPER_NAME = "multitask"``).
        rank / world_size: this process's shard; default from ``torch.distributed``.
    """
    names = list(cfg.DATASETS.TRAIN)
    dicts = _with_trainable_tasks(get_dataset_dicts(names), cfg)
    _check_metadata_consistency(names, _SHARED_MULTITASK_METADATA)
    world = comm.get_world_size() if world_size is None else int(world_size)
    batch_size = _images_per_worker(cfg, world)
    mapper = mapper if mapper is not None else build_mapper(cfg, True)
    seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
    sampler = SourceBatchSampler(
        source_indices(dicts), batch_size, seed, rank=rank, world_size=world
    )
    logger.info("Multi-task sources: %s", {n: len(i) for n, i in source_indices(dicts).items()})
    dataset = MapDataset(SerializedList(dicts), mapper)
    stream = TrainStream(
        dataset, sampler, seed=seed, batch_size=batch_size, world_size=world, rank=rank
    )
    return DataLoader(stream, batch_size=None, collate_fn=_identity, **_worker_options(cfg))


def build_test_loader(
    cfg: Any, dataset_name: str, mapper: Callable[[dict], dict] | None = None
) -> DataLoader:
    """Loader over this process's shard of ``dataset_name``, batches of one (``list[dict]``)."""
    dicts = get_dataset_dicts([dataset_name])
    mapper = mapper if mapper is not None else build_mapper(cfg, False)
    dataset = MapDataset(SerializedList(dicts), mapper)
    return DataLoader(
        dataset,
        batch_size=1,
        sampler=InferenceSampler(len(dataset)),
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        collate_fn=trivial_batch_collator,
        worker_init_fn=worker_init_reset_seed,
        multiprocessing_context=_worker_context(cfg.DATALOADER.NUM_WORKERS),
    )
