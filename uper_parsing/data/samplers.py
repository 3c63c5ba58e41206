"""Samplers of dataset indices, sharded across distributed processes (detectron2's semantics)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
from torch.utils.data.sampler import Sampler

from ..utils import comm

__all__ = ["TrainingSampler", "InferenceSampler"]


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
