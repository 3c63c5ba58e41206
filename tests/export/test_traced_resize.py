"""``layers.resize_to`` in traced graphs: sizes stay sizes, and the "already that size" shortcut
is never kept by a trace (it would skip the resize at every other size)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from uper_parsing.layers import resize_to


def _resize_like(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return resize_to(x, ref.shape[-2:])


def test_jit_trace_at_equal_sizes_still_resizes_at_others():
    traced = torch.jit.trace(_resize_like, (torch.rand(1, 2, 6, 6), torch.rand(1, 1, 6, 6)))
    x, ref = torch.rand(1, 2, 5, 7), torch.rand(1, 1, 11, 13)
    out = traced(x, ref)
    expected = F.interpolate(x, size=(11, 13), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, expected)


def test_export_keeps_the_target_size_symbolic():
    class ResizeLike(torch.nn.Module):
        def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
            return _resize_like(x, ref)

    dims = {2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
    program = torch.export.export(
        ResizeLike(), (torch.rand(1, 2, 6, 6), torch.rand(1, 1, 9, 10)), dynamic_shapes=(dims, dims)
    )
    x, ref = torch.rand(1, 2, 5, 7), torch.rand(1, 1, 11, 13)
    expected = F.interpolate(x, size=(11, 13), mode="bilinear", align_corners=False)
    torch.testing.assert_close(program.module()(x, ref), expected)


def test_eager_shortcut_returns_the_input_itself():
    x = torch.rand(1, 2, 5, 7)
    assert resize_to(x, (5, 7)) is x
    assert resize_to(x, torch.Size([5, 7])) is x
