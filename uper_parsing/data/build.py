"""Train and test data loaders (detectron2's ``build_detection_{train,test}_loader``)."""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import pickle
import random
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from ..config import configurable
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
    "SKIPPED_KEY",
    "TrainLoader",
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


SKIPPED_KEY = "skipped_file_names"  # the files a MapDataset item replaces


class MapDataset(Dataset):
    """``dataset[i] = mapper(items[i])``.

    With ``skip_bad`` (``DATALOADER.SKIP_BAD_SAMPLES``) an item whose mapping raises a read error
    (``OSError`` / ``ValueError``: a missing, truncated or undecodable file, a label failing its
    checks) is logged by file name and replaced by the next item of its group (``groups[i]``,
    cyclically; all items one group when None), so batches keep their size and stay a function
    of the seed; the replacement dict lists the skipped files under ``SKIPPED_KEY`` (counted by
    ``TrainLoader``). Otherwise an error propagates with a note naming the item's file.
    """

    def __init__(
        self,
        items: Sequence[Any],
        mapper: Callable[[Any], Any],
        *,
        skip_bad: bool = False,
        groups: Sequence[Any] | None = None,
    ) -> None:
        self._items = items
        self._mapper = mapper
        self._next = _next_in_group(len(items), groups) if skip_bad else None

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index: int) -> Any:
        first, skipped = index, []
        while True:
            item = self._items[index]
            try:
                out = self._mapper(item)
                break
            except Exception as err:
                if self._next is None or not isinstance(err, (OSError, ValueError)):
                    err.add_note(f"(mapping item {index} of the dataset: {_file_name(item)})")
                    raise
                skipped.append(_file_name(item))
                index = int(self._next[index])
                logger.warning("Skipping bad sample %s (%s); item %d replaces it", skipped[-1],
                               err, index)  # fmt: skip
            if index == first:
                raise RuntimeError(
                    f"DATALOADER.SKIP_BAD_SAMPLES: all {len(skipped)} samples of item {first}'s "
                    f"group are bad, e.g. {skipped[:3]}"
                )
        if skipped and isinstance(out, dict):
            out[SKIPPED_KEY] = skipped
        return out


def _file_name(item: Any) -> str:
    return str(item.get("file_name", "?")) if isinstance(item, dict) else repr(item)[:200]


def _next_in_group(size: int, groups: Sequence[Any] | None) -> np.ndarray:
    """(size,) int64: the index after each one in its group, the last one's being the first."""
    keys = [0] * size if groups is None else list(groups)
    members: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    following = np.arange(size, dtype=np.int64)
    for indices in members.values():
        following[indices] = np.roll(indices, -1)
    return following


class TrainLoader(DataLoader):
    """A ``DataLoader`` whose batches are lists of dicts, counting (and removing) the files a
    ``MapDataset`` skipped: ``skipped`` is the number of bad samples in the batches it yielded."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skipped = 0

    def __iter__(self) -> Iterator[Any]:
        for batch in super().__iter__():
            for item in batch:
                if isinstance(item, dict):
                    self.skipped += len(item.pop(SKIPPED_KEY, ()))
            yield batch


class TrainStream(IterableDataset):
    """This process's training batches, from batch ``start`` on.

    ``batch_sampler`` yields the global batches (``batch_size * world_size`` indices, the same on
    every process); process ``rank`` maps the items at positions ``rank``, ``rank + world_size``,
    ... of each (dealt like cards, as detectron2's ``TrainingSampler`` shards its stream), each
    with Python's, NumPy's and torch's generators seeded from (``seed``, batch number, position in
    the global batch). So the processes' batches together are the batch one process reads with
    the global batch size, image for image and augmentation for augmentation.

    The stream is a function of the seed and the batch number alone: the same with any number of
    loader workers (worker w of n maps the batches j = start + w mod n, and the loader takes the
    workers in turn from worker 0), and a run resumed after k iterations continues it exactly by
    setting ``start`` to k (``DefaultTrainer.resume_or_load``). ``state_dict`` is what a
    checkpoint keeps of it.
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
                positions = range(self.rank, len(batch), self.world_size)
                yield [self._map(j, p, batch[p]) for p in positions]

    def _map(self, batch_number: int, position: int, index: int) -> Any:
        seed_all_rng(derived_seed(self.seed, batch_number, position))
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
    and import everything again before the first batch (docs/BENCHMARKS.md, "Panoptic FPN R50
    on 2 H200s").
    Forking is what a single process and torchrun's processes use anyway; workers never touch
    CUDA.
    """
    if num_workers > 0 and "fork" in multiprocessing.get_all_start_methods():
        return "fork"
    return None


def _worker_options(num_workers: int, pin_memory: bool) -> dict[str, Any]:
    """DataLoader arguments of the training loaders: ``num_workers`` persistent workers (no
    per-worker seeding: ``TrainStream`` seeds every item by its position); batches in pinned
    memory when ``pin_memory`` and CUDA is present (the model's copies are then asynchronous)."""
    return {
        "pin_memory": bool(pin_memory) and torch.cuda.is_available(),
        "num_workers": num_workers,
        "persistent_workers": num_workers > 0,
        "multiprocessing_context": _worker_context(num_workers),
    }


def _images_per_process(total_batch_size: int, world_size: int) -> int:
    if total_batch_size <= 0 or total_batch_size % world_size != 0:
        raise ValueError(
            f"The total batch size (SOLVER.IMS_PER_BATCH) {total_batch_size} must be a positive "
            f"multiple of the number of processes ({world_size})"
        )
    return total_batch_size // world_size


def _is_multitask(names: Sequence[str]) -> bool:
    """Whether ``names`` are multi-task datasets (their metadata lists ``sources``)."""
    return bool(len(names)) and MetadataCatalog.get(names[0]).get("sources") is not None


def _train_loader_from_config(
    cfg: Any,
    mapper: Callable[[dict], Any] | None = None,
    *,
    dataset: Sequence[Any] | None = None,
    sampler: Iterable[int] | None = None,
) -> dict[str, Any]:
    """``build_train_loader``'s arguments from ``cfg``: ``DATASETS.TRAIN`` (or ``dataset``),
    ``build_mapper(cfg, True)`` (or ``mapper``), a ``DATALOADER.SAMPLER_TRAIN`` seeded by ``SEED``
    (or ``sampler``), ``SOLVER.IMS_PER_BATCH`` and the ``DATALOADER`` options; multi-task datasets
    (metadata with ``sources``) get ``build_multitask_train_loader``'s arguments."""
    if dataset is None and sampler is None and _is_multitask(cfg.DATASETS.TRAIN):
        return _multitask_loader_args(cfg, mapper)
    _images_per_process(cfg.SOLVER.IMS_PER_BATCH, comm.get_world_size())  # before any reading
    dataset = get_dataset_dicts(cfg.DATASETS.TRAIN) if dataset is None else dataset
    mapper = build_mapper(cfg, True) if mapper is None else mapper
    seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
    if sampler is None:
        name = cfg.DATALOADER.SAMPLER_TRAIN
        if name not in _TRAIN_SAMPLERS:
            raise ValueError(
                f"DATALOADER.SAMPLER_TRAIN = {name!r} is not one of {list(_TRAIN_SAMPLERS)}"
            )
        # the global stream: every process reads all of it and maps its share (TrainStream)
        sampler = _TRAIN_SAMPLERS[name](len(dataset), shuffle=True, seed=seed, rank=0, world_size=1)
    return {
        "dataset": dataset,
        "mapper": mapper,
        "sampler": sampler,
        "total_batch_size": cfg.SOLVER.IMS_PER_BATCH,
        "aspect_ratio_grouping": cfg.DATALOADER.ASPECT_RATIO_GROUPING,
        "seed": seed,
        "num_workers": cfg.DATALOADER.NUM_WORKERS,
        "pin_memory": cfg.DATALOADER.PIN_MEMORY,
        "skip_bad_samples": cfg.DATALOADER.SKIP_BAD_SAMPLES,
    }


@configurable(from_config=_train_loader_from_config)
def build_train_loader(
    dataset: Sequence[Any],
    *,
    mapper: Callable[[Any], Any] | None,
    total_batch_size: int,
    sampler: Iterable[int] | None = None,
    aspect_ratio_grouping: bool = True,
    batch_sampler: Iterable[list[int]] | None = None,
    groups: Sequence[Any] | None = None,
    seed: int | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
    skip_bad_samples: bool = False,
    rank: int | None = None,
    world_size: int | None = None,
) -> TrainLoader:
    """Infinite loader of training batches, ``list`` of ``total_batch_size // world_size`` mapped
    items; callable as ``build_train_loader(cfg, mapper=None, *, dataset=None, sampler=None)`` or
    with explicit arguments and no cfg (``configurable``).

    The global batches (the same on every process) come from ``batch_sampler``, or are cut from
    ``sampler`` in ``total_batch_size`` (grouped by orientation with ``aspect_ratio_grouping``);
    ``TrainStream`` deals each out to the processes and seeds every item from (``seed``, batch
    number, position), so the stream is a function of the seed.

    Args:
        dataset: a list of dataset dicts (stored serialized) or a map-style dataset.
        mapper: ``mapper(item) -> model input``; None: items are used as they are.
        total_batch_size: images per step summed over all processes (``SOLVER.IMS_PER_BATCH``).
        sampler: infinite stream of dataset indices, the same on every process (default: a
            shuffled ``TrainingSampler(len(dataset), seed=seed, rank=0, world_size=1)``).
        aspect_ratio_grouping: batch images of one orientation (``height`` / ``width`` of the
            dataset dicts) together.
        batch_sampler: global batches of indices instead of ``sampler`` (the multi-task
            ``SourceBatchSampler``).
        groups: group of each item, where a skipped bad sample is replaced from (one group when
            None).
        seed: seed of the default sampler and of the items (None: one drawn and shared).
        num_workers, pin_memory: ``DataLoader`` options (pinning only where CUDA is present).
        skip_bad_samples: ``DATALOADER.SKIP_BAD_SAMPLES`` (see ``MapDataset``).
        rank / world_size: this process's share; default from ``torch.distributed``.
    """
    world = comm.get_world_size() if world_size is None else int(world_size)
    batch_size = _images_per_process(total_batch_size, world)
    seed = comm.shared_random_seed() if seed is None else int(seed)
    if batch_sampler is None:
        batch_sampler = _global_batches(
            dataset, sampler, total_batch_size, aspect_ratio_grouping, seed
        )
    elif sampler is not None:
        raise ValueError("build_train_loader takes a sampler or a batch_sampler, not both")
    items = SerializedList(dataset) if isinstance(dataset, list) else dataset
    mapped = MapDataset(
        items, _identity if mapper is None else mapper, skip_bad=skip_bad_samples, groups=groups
    )
    stream = TrainStream(
        mapped, batch_sampler, seed=seed, batch_size=batch_size, world_size=world, rank=rank
    )
    options = _worker_options(num_workers, pin_memory)
    return TrainLoader(stream, batch_size=None, collate_fn=_identity, **options)


def _global_batches(
    dataset: Sequence[Any],
    sampler: Iterable[int] | None,
    total_batch_size: int,
    aspect_ratio_grouping: bool,
    seed: int,
) -> Iterable[list[int]]:
    """Batches of ``total_batch_size`` indices of ``sampler`` (default: a shuffled
    ``TrainingSampler`` of the whole stream), grouped by orientation when asked."""
    if sampler is None:
        sampler = TrainingSampler(len(dataset), shuffle=True, seed=seed, rank=0, world_size=1)
    if not aspect_ratio_grouping:
        return BatchSampler(sampler, total_batch_size)
    return GroupedBatchSampler(sampler, [_is_portrait(d) for d in dataset], total_batch_size)


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


def _with_trainable_tasks(
    dicts: list[dict], names: Sequence[str], trainable: Collection[str]
) -> list[dict]:
    """The images of datasets ``names`` that label at least one of the ``trainable`` tasks."""
    trainable = set(trainable)
    kept = [d for d in dicts if trainable.intersection(d.get("tasks", ()))]
    if not kept:
        raise ValueError(f"No image of {list(names)} labels a task the model trains ({trainable})")
    if len(kept) < len(dicts):
        logger.info("Training on %d of %d images: the rest label none of %s", len(kept),
                    len(dicts), sorted(trainable))  # fmt: skip
    return kept


def build_multitask_train_loader(
    cfg: Any,
    mapper: Callable[[dict], dict] | None = None,
    *,
    tasks: Collection[str] | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> Iterable:
    """Infinite loader of multi-task training batches: ``list[dict]`` of
    ``IMS_PER_BATCH // world_size``, every batch from one source.

    The source of each step is drawn in proportion to its number of images with a generator
    seeded by ``SEED`` (or a shared random seed), and the global batch from that source's own
    stream (``SourceBatchSampler``), the same on every process; each process maps its share of
    it (``TrainStream``) in ``DATALOADER.NUM_WORKERS`` workers.
    The datasets of ``DATASETS.TRAIN`` must share their multi-task metadata.

    Args:
        mapper: default ``build_mapper(cfg, True)`` (``INPUT.DATASET_MAPPER_NAME = "multitask"``).
        tasks: the tasks the model trains: images labelling none of them are left out (the
            multi-task record passes its model's, ``tasks.multitask.trainable_tasks``); None
            keeps every image.
        rank / world_size: this process's shard; default from ``torch.distributed``.
    """
    args = _multitask_loader_args(cfg, mapper, tasks=tasks, rank=rank, world_size=world_size)
    return build_train_loader(**args)


def _multitask_loader_args(
    cfg: Any,
    mapper: Callable[[dict], dict] | None = None,
    *,
    tasks: Collection[str] | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> dict[str, Any]:
    """``build_train_loader``'s arguments for ``build_multitask_train_loader``."""
    names = list(cfg.DATASETS.TRAIN)
    dicts = get_dataset_dicts(names)
    if tasks is not None:
        dicts = _with_trainable_tasks(dicts, names, tasks)
    _check_metadata_consistency(names, _SHARED_MULTITASK_METADATA)
    world = comm.get_world_size() if world_size is None else int(world_size)
    total = cfg.SOLVER.IMS_PER_BATCH
    _images_per_process(total, world)
    mapper = build_mapper(cfg, True) if mapper is None else mapper
    seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
    # the global batches: every process reads all of them and maps its share (TrainStream)
    sampler = SourceBatchSampler(source_indices(dicts), total, seed, rank=0, world_size=1)
    logger.info("Multi-task sources: %s", {n: len(i) for n, i in source_indices(dicts).items()})
    return {
        "dataset": dicts,
        "mapper": mapper,
        "total_batch_size": total,
        "batch_sampler": sampler,
        "groups": [d["source"] for d in dicts],
        "seed": seed,
        "num_workers": cfg.DATALOADER.NUM_WORKERS,
        "pin_memory": cfg.DATALOADER.PIN_MEMORY,
        "skip_bad_samples": cfg.DATALOADER.SKIP_BAD_SAMPLES,
        "rank": rank,
        "world_size": world,
    }


def _test_loader_from_config(
    cfg: Any, dataset_name: str, mapper: Callable[[dict], Any] | None = None
) -> dict[str, Any]:
    """``build_test_loader``'s arguments: the dicts of ``dataset_name`` (one dataset: each test
    set is evaluated on its own), ``build_mapper(cfg, False)`` (or ``mapper``) and
    ``DATALOADER.NUM_WORKERS``."""
    return {
        "dataset": get_dataset_dicts([dataset_name]),
        "mapper": build_mapper(cfg, False) if mapper is None else mapper,
        "num_workers": cfg.DATALOADER.NUM_WORKERS,
    }


@configurable(from_config=_test_loader_from_config)
def build_test_loader(
    dataset: Sequence[Any],
    *,
    mapper: Callable[[Any], Any] | None,
    sampler: Iterable[int] | None = None,
    num_workers: int = 0,
) -> DataLoader:
    """Loader over this process's shard of ``dataset``, batches of one (``list`` of one mapped
    item); callable as ``build_test_loader(cfg, dataset_name, mapper=None)`` or with explicit
    arguments and no cfg (``configurable``).

    Args:
        dataset: a list of dataset dicts (stored serialized) or a map-style dataset.
        mapper: ``mapper(item) -> model input``; None: items are used as they are.
        sampler: indices this process loads (default: its contiguous ``InferenceSampler`` shard).
        num_workers: loader worker processes (forked where the platform can).
    """
    items = SerializedList(dataset) if isinstance(dataset, list) else dataset
    mapped = MapDataset(items, _identity if mapper is None else mapper)
    return DataLoader(
        mapped,
        batch_size=1,
        sampler=InferenceSampler(len(mapped)) if sampler is None else sampler,
        num_workers=num_workers,
        collate_fn=trivial_batch_collator,
        worker_init_fn=worker_init_reset_seed,
        multiprocessing_context=_worker_context(num_workers),
    )
