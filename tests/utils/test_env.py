"""seed_all_rng: the generators it seeds draw what a torch.manual_seed-seeded run draws."""

from __future__ import annotations

import random

import numpy as np
import torch

from uper_parsing.utils.env import seed_all_rng


def _draws() -> tuple[float, float, torch.Tensor, torch.Tensor]:
    return random.random(), float(np.random.rand()), torch.rand(5), torch.randperm(7)


def test_seed_all_rng_matches_manual_seed_streams():
    random.seed(123), np.random.seed(123), torch.manual_seed(123)
    expected = _draws()
    assert seed_all_rng(123) == 123
    got = _draws()
    assert got[:2] == expected[:2]
    assert torch.equal(got[2], expected[2]) and torch.equal(got[3], expected[3])


def test_seed_all_rng_reduces_seed_modulo_2_32():
    assert seed_all_rng(2**32 + 5) == 5
    first = torch.rand(3)
    seed_all_rng(5)
    assert torch.equal(torch.rand(3), first)
