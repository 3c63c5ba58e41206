"""batched_nms_top: torchvision's batched_nms truncated to the best ``top``, exactly, from fewer
candidates when they suffice."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import batched_nms

from uper_parsing.layers import batched_nms_top


def _detections(seed: int, count: int, classes: int, spread: float):
    """``count`` boxes over ``classes`` categories with distinct scores; a small ``spread``
    piles them up (most suppress each other), a large one scatters them."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(count, 2, generator=g) * spread
    wh = 5 + torch.rand(count, 2, generator=g) * 20
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.randperm(count, generator=g).float() / count  # distinct: one NMS order
    return boxes, scores, torch.randint(classes, (count,), generator=g)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    count=st.integers(0, 3000),
    classes=st.integers(1, 80),
    spread=st.sampled_from([10.0, 100.0, 1000.0]),
    top=st.integers(0, 150),
    first=st.sampled_from([None, 1, 7, 200]),
)
def test_equals_batched_nms_truncated(seed, count, classes, spread, top, first):
    boxes, scores, idxs = _detections(seed, count, classes, spread)
    expected = batched_nms(boxes, scores, idxs, 0.5)[:top]
    got = batched_nms_top(boxes, scores, idxs, 0.5, top, first_candidates=first)
    assert got.dtype == torch.int64
    assert torch.equal(got, expected)


def test_grows_the_candidates_until_enough_survive(monkeypatch):
    """Piled-up boxes of one class: few of the first candidates survive, so the candidates grow
    (7 -> 28 -> ...) until 5 survive; scattered boxes of 80 classes need one round."""
    import uper_parsing.layers.nms as nms

    calls = []

    def counting(boxes, *args):
        calls.append(len(boxes))
        return batched_nms(boxes, *args)

    monkeypatch.setattr(nms, "batched_nms", counting)
    g = torch.Generator().manual_seed(0)
    corner = torch.rand(2000, 2, generator=g) * 25  # 50x50 boxes: 5 survive, the 5th 39th best
    boxes = torch.cat([corner, corner + 50], dim=1)
    scores, idxs = torch.rand(2000, generator=g), torch.zeros(2000, dtype=torch.int64)
    got = batched_nms_top(boxes, scores, idxs, 0.5, 5, first_candidates=7)
    assert torch.equal(got, batched_nms(boxes, scores, idxs, 0.5)[:5])
    assert calls == [7, 28, 112]
    calls.clear()
    boxes, scores, idxs = _detections(1, 2000, 80, 1000.0)
    batched_nms_top(boxes, scores, idxs, 0.5, 100)
    assert calls == [1000]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_equals_batched_nms_on_the_gpu():
    boxes, scores, idxs = (t.cuda() for t in _detections(3, 80_000, 80, 800.0))
    expected = batched_nms(boxes, scores, idxs, 0.5)[:100]
    assert torch.equal(batched_nms_top(boxes, scores, idxs, 0.5, 100), expected)
