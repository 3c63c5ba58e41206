import itertools

import pytest

from uper_parsing.data import InferenceSampler, TrainingSampler


def _take(sampler, n):
    return list(itertools.islice(iter(sampler), n))


@pytest.mark.parametrize("size, world", [(10, 2), (11, 2), (7, 3), (2, 4)])
def test_inference_shards_cover_every_index_once(size, world):
    shards = [list(InferenceSampler(size, rank=r, world_size=world)) for r in range(world)]
    assert sorted(sum(shards, [])) == list(range(size))
    assert sum(shards, []) == list(range(size))  # contiguous, in rank order
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert [len(InferenceSampler(size, rank=r, world_size=world)) for r in range(world)] == [
        len(s) for s in shards
    ]


def test_training_sampler_seeded_and_infinite():
    a = _take(TrainingSampler(5, seed=42, rank=0, world_size=1), 25)
    b = _take(TrainingSampler(5, seed=42, rank=0, world_size=1), 25)
    c = _take(TrainingSampler(5, seed=43, rank=0, world_size=1), 25)
    assert a == b and a != c
    for epoch in range(5):  # every epoch is a permutation
        assert sorted(a[epoch * 5 : epoch * 5 + 5]) == list(range(5))
    assert _take(TrainingSampler(3, shuffle=False, seed=0), 7) == [0, 1, 2, 0, 1, 2, 0]


def test_training_sampler_shards_by_rank():
    full = _take(TrainingSampler(8, seed=7, rank=0, world_size=1), 16)
    r0 = _take(TrainingSampler(8, seed=7, rank=0, world_size=2), 8)
    r1 = _take(TrainingSampler(8, seed=7, rank=1, world_size=2), 8)
    assert r0 != r1
    assert r0 == full[0::2] and r1 == full[1::2]
    assert sorted(r0[:4] + r1[:4]) == list(range(8))  # one epoch, split between the ranks


def test_sampler_argument_checks():
    with pytest.raises(ValueError):
        TrainingSampler(0, seed=0)
    with pytest.raises(ValueError):
        InferenceSampler(4, rank=2, world_size=2)
