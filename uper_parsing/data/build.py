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
    (``SEED``, or a shared random seed when negative), in global batches of ``IMS_PER_BATCH``
    (grouped by aspect ratio when ``DATALOADER.ASPECT_RATIO_GROUPING``) that ``TrainStream``
    deals out to the processes. Multi-task datasets (metadata with ``sources``) go to
    ``build_multitask_train_loader``.
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
    # the global stream: every process reads all of it and maps its share (TrainStream)
    sampler = _TRAIN_SAMPLERS[name](len(dicts), shuffle=True, seed=seed, rank=0, world_size=1)
    total = cfg.SOLVER.IMS_PER_BATCH
    if cfg.DATALOADER.ASPECT_RATIO_GROUPING:
        batches = GroupedBatchSampler(sampler, [_is_portrait(d) for d in dicts], total)
    else:
        batches = BatchSampler(sampler, total)
    skip_bad = cfg.DATALOADER.SKIP_BAD_SAMPLES
    dataset = MapDataset(SerializedList(dicts), mapper, skip_bad=skip_bad)
    stream = TrainStream(dataset, batches, seed=seed, batch_size=batch_size)
    return TrainLoader(stream, batch_size=None, collate_fn=_identity, **_worker_options(cfg))


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
    seeded by ``SEED`` (or a shared random seed), and the global batch from that source's own
    stream (``SourceBatchSampler``), the same on every process; each process maps its share of
    it (``TrainStream``) in ``DATALOADER.NUM_WORKERS`` workers.
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
    # the global batches: every process reads all of them and maps its share (TrainStream)
    sampler = SourceBatchSampler(
        source_indices(dicts), batch_size * world, seed, rank=0, world_size=1
    )
    logger.info("Multi-task sources: %s", {n: len(i) for n, i in source_indices(dicts).items()})
    skip_bad, sources = cfg.DATALOADER.SKIP_BAD_SAMPLES, [d["source"] for d in dicts]
    dataset = MapDataset(SerializedList(dicts), mapper, skip_bad=skip_bad, groups=sources)
    stream = TrainStream(
        dataset, sampler, seed=seed, batch_size=batch_size, world_size=world, rank=rank
    )
    return TrainLoader(stream, batch_size=None, collate_fn=_identity, **_worker_options(cfg))


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
