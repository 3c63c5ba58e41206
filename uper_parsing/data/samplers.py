"""Samplers of dataset indices, sharded across distributed processes (detectron2's semantics)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data.sampler import Sampler

from ..utils import comm

__all__ = [
    "TrainingSampler",
    "InferenceSampler",
    "SourceBatchSampler",
    "BatchSampler",
    "GroupedBatchSampler",
]


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    rank = comm.get_rank() if rank is None else int(rank)
    world_size = comm.get_world_size() if world_size is None else int(world_size)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    return rank, world_size


class TrainingSampler(Sampler[int]):
    """Infinite stream of indices in ``[0, size)``: shuffled (or in order) epoch after epoch.

    Every process generates the same seeded stream and keeps the elements ``rank::world_size``,
    so the processes together see each index once per epoch and never the same one at once.
    """

    def __init__(
        self,
        size: int,
        shuffle: bool = True,
        seed: int | None = None,
        *,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        """
        Args:
            size: number of dataset elements (> 0).
            shuffle: a new permutation every epoch (else 0..size-1 repeated).
            seed: seed of the stream; None draws one shared by all processes.
            rank / world_size: this process's shard; default from ``torch.distributed``.
        """
        if size <= 0:
            raise ValueError(f"TrainingSampler needs a non-empty dataset, got size {size}")
        self._size = int(size)
        self._shuffle = shuffle
        self._seed = int(comm.shared_random_seed() if seed is None else seed)
        self._rank, self._world_size = _rank_and_world(rank, world_size)

    def __iter__(self) -> Iterator[int]:
        yield from itertools.islice(self._infinite_indices(), self._rank, None, self._world_size)

    def _infinite_indices(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self._seed)
        while True:
            if self._shuffle:
                yield from torch.randperm(self._size, generator=g).tolist()
            else:
                yield from range(self._size)


class InferenceSampler(Sampler[int]):
    """Contiguous shard of ``[0, size)`` per process; together the shards cover each index once.

    The first ``size % world_size`` ranks get one extra element.
    """

    def __init__(
        self, size: int, *, rank: int | None = None, world_size: int | None = None
    ) -> None:
        if size < 0:
            raise ValueError(f"size must be >= 0, got {size}")
        self._size = int(size)
        rank, world_size = _rank_and_world(rank, world_size)
        shard, left = divmod(self._size, world_size)
        sizes = [shard + int(r < left) for r in range(world_size)]
        begin = sum(sizes[:rank])
        self._local_indices = range(begin, begin + sizes[rank])

    def __iter__(self) -> Iterator[int]:
        yield from self._local_indices

    def __len__(self) -> int:
        return len(self._local_indices)


class SourceBatchSampler:
    """Infinite stream of this process's batches, each from ONE source (multi-task training).

    For every global batch, a source is drawn with probability proportional to its number of
    images from a generator seeded by ``seed`` alone, so all processes draw the same source. The
    next ``batch_size * world_size`` indices of that source's own shuffled stream (a new
    permutation each time it is used up) form the global batch; process ``rank`` keeps its
    elements ``rank::world_size`` (as ``TrainingSampler`` shards), so processes never share an
    image in a step.
    """

    def __init__(
        self,
        source_indices: Mapping[str, Sequence[int]],
        batch_size: int,
        seed: int | None = None,
        *,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        """
        Args:
            source_indices: {source name: dataset indices of its images} (each non-empty).
            batch_size: images per batch of this process.
            seed: seed of the stream; None draws one shared by all processes.
            rank / world_size: this process's shard; default from ``torch.distributed``.
        """
        if not source_indices:
            raise ValueError("SourceBatchSampler needs at least one source")
        empty = [name for name, ids in source_indices.items() if len(ids) == 0]
        if empty:
            raise ValueError(f"Sources without images: {empty}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.sources = list(source_indices)
        self._indices = [
            torch.as_tensor(list(source_indices[n]), dtype=torch.long) for n in self.sources
        ]
        self._batch_size = int(batch_size)
        self._seed = int(comm.shared_random_seed() if seed is None else seed)
        self._rank, self._world_size = _rank_and_world(rank, world_size)

    def _stream(self, k: int) -> Iterator[int]:
        """Endless shuffled indices of source ``k`` (the same on every process)."""
        g = torch.Generator()
        g.manual_seed(int(np.random.SeedSequence([self._seed, k + 1]).generate_state(1)[0]))
        indices = self._indices[k]
        while True:
            yield from indices[torch.randperm(len(indices), generator=g)].tolist()

    def source_stream(self) -> Iterator[int]:
        """The endless sequence of drawn source positions (in ``self.sources``), one per batch."""
        g = torch.Generator()
        g.manual_seed(self._seed)
        sizes = torch.tensor([len(i) for i in self._indices], dtype=torch.float64)
        while True:
            yield int(torch.multinomial(sizes, 1, generator=g))

    def __iter__(self) -> Iterator[list[int]]:
        streams = [self._stream(k) for k in range(len(self.sources))]
        total = self._batch_size * self._world_size
        for k in self.source_stream():
            batch = list(itertools.islice(streams[k], total))
            yield batch[self._rank :: self._world_size]


class BatchSampler:
    """Endless batches of ``batch_size`` consecutive indices of an endless ``sampler``."""

    def __init__(self, sampler: Iterable[int], batch_size: int) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self._sampler = sampler
        self._batch_size = int(batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        indices = iter(self._sampler)
        while True:
            yield list(itertools.islice(indices, self._batch_size))


class GroupedBatchSampler:
    """Endless batches of indices of one group each (detectron2's ``GroupedBatchSampler``): the
    indices of ``sampler`` in order, each put into the bucket of ``group_ids[index]``, a bucket
    yielded when it holds ``batch_size``. Grouping landscape and portrait images apart keeps the
    padding of a batch small; doing it on indices keeps the batch stream a function of the
    sampler alone."""

    def __init__(self, sampler: Iterable[int], group_ids: Sequence[int], batch_size: int) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self._sampler = sampler
        self._group_ids = np.asarray(group_ids)
        self._batch_size = int(batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        buckets: dict[int, list[int]] = {}
        for index in self._sampler:
            bucket = buckets.setdefault(int(self._group_ids[index]), [])
            bucket.append(index)
            if len(bucket) == self._batch_size:
                yield bucket[:]
                bucket.clear()
