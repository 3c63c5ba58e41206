"""The one resize policy: bilinear, ``align_corners=False``, to an explicit size.

``resize_to`` computes exactly what ``F.interpolate(x, size, mode="bilinear",
align_corners=False)`` computes. On CUDA it does so as two matrix products with the bilinear
weight matrices (``"matmul"``): PyTorch's bilinear kernel upsamples in float32 whatever the input
dtype, and its backward scatters with atomics, which made resizing most of the GPU time of a
UPerNet training step (``docs/BENCHMARKS.md``). A matrix product runs on the tensor cores in the
autocast dtype, and its backward is another matrix product. Each output pixel still mixes the
same two rows and two columns with the same weights, so the values agree with ``F.interpolate`` to
the rounding of the compute dtype (float64: 1e-15).

``set_resize_impl`` chooses the implementation process-wide (``MODEL.RESIZE_IMPL``, applied by
``build_model``): ``"auto"`` (matrix products on CUDA, ``F.interpolate`` elsewhere: on a CPU the
dense product costs more than the two-tap kernel at large sizes), ``"matmul"`` or
``"interpolate"``.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch.fx.experimental.symbolic_shapes import statically_known_true

__all__ = [
    "RESIZE_IMPLS",
    "resize_to",
    "set_resize_impl",
    "get_resize_impl",
    "resize_impl",
    "bilinear_matrix",
]

RESIZE_IMPLS = ("auto", "matmul", "interpolate")
_impl = "auto"


def set_resize_impl(name: str) -> None:
    """Choose how ``resize_to`` resizes, for the whole process: one of ``RESIZE_IMPLS``."""
    global _impl
    if name not in RESIZE_IMPLS:
        raise ValueError(f"MODEL.RESIZE_IMPL must be one of {RESIZE_IMPLS}, got {name!r}")
    _impl = name


def get_resize_impl() -> str:
    """The implementation ``resize_to`` uses now (see ``set_resize_impl``)."""
    return _impl


@contextlib.contextmanager
def resize_impl(name: str) -> Iterator[None]:
    """Within the block ``resize_to`` uses ``name``; the previous choice is restored after."""
    previous = _impl
    set_resize_impl(name)
    try:
        yield
    finally:
        set_resize_impl(previous)


def bilinear_matrix(
    out_size: int, in_size: int, *, device: torch.device | str = "cpu", dtype=torch.float64
) -> torch.Tensor:
    """Weights of 1-d bilinear resizing with ``align_corners=False``, as PyTorch computes them.

    Output pixel i samples the input at ``s = max((i + 0.5) * in / out - 0.5, 0)`` and mixes
    pixels ``floor(s)`` and ``floor(s) + 1`` (the last pixel twice at the border) with weights
    ``1 - frac(s)`` and ``frac(s)``.

    Returns: Tensor (out_size, in_size), each row summing to 1.
    """
    dst = torch.arange(out_size, dtype=torch.float64, device=device)
    src = ((dst + 0.5) * (in_size / out_size) - 0.5).clamp(min=0.0)
    low = src.floor().clamp(max=in_size - 1)
    frac = (src - low).clamp(0.0, 1.0)
    low = low.long()
    high = (low + 1).clamp(max=in_size - 1)
    weights = torch.zeros(out_size, in_size, dtype=torch.float64, device=device)
    weights.scatter_add_(1, low[:, None], (1.0 - frac)[:, None])
    weights.scatter_add_(1, high[:, None], frac[:, None])
    return weights.to(dtype)


@functools.lru_cache(maxsize=128)
def _cached_matrix(out_size: int, in_size: int, device: torch.device, dtype) -> torch.Tensor:
    return bilinear_matrix(out_size, in_size, device=device, dtype=dtype)


def _matrix(out_size: int, in_size: int, device: torch.device, dtype) -> torch.Tensor:
    if torch.compiler.is_compiling():  # traced: built inside the graph, constant-folded
        return bilinear_matrix(out_size, in_size, device=device, dtype=dtype)
    return _cached_matrix(out_size, in_size, device, dtype)


def _compute_dtype(x: torch.Tensor):
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return x.dtype


def _resize_matmul(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of x: Tensor (N, C, h, w) as ``Wy @ x @ Wx^T``, in x's memory layout."""
    n, c, h, w = x.shape
    out_h, out_w = size
    dtype = _compute_dtype(x)
    wy = _matrix(out_h, h, x.device, dtype)
    wx = _matrix(out_w, w, x.device, dtype)
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        nhwc = x.permute(0, 2, 3, 1)  # (N, h, w, C) contiguous
        cols = torch.matmul(wx, nhwc.reshape(n * h, w, c))  # (N*h, W, C)
        rows = torch.matmul(wy, cols.reshape(n, h, out_w * c))  # (N, H, W*C)
        return rows.reshape(n, out_h, out_w, c).permute(0, 3, 1, 2)
    cols = torch.matmul(x.reshape(n * c * h, w), wx.t())  # (N*C*h, W)
    rows = torch.matmul(wy, cols.reshape(n * c, h, out_w))  # (N*C, H, W)
    return rows.reshape(n, c, out_h, out_w)


def _plain_size(side: int | torch.SymInt | torch.Tensor) -> int | torch.SymInt | torch.Tensor:
    """A side as an int; a traced size (``torch.export``'s SymInt, ``torch.jit.trace``'s 0-d
    tensor) stays traced, since ``int()`` would fix the graph to the size seen while tracing."""
    return side if isinstance(side, (torch.SymInt, torch.Tensor)) else int(side)


def _known_same_size(x: torch.Tensor, size: tuple) -> bool:
    """Whether x has ``size`` for every input, so resizing can be skipped. Under
    ``torch.jit.trace`` never (the trace would keep the shortcut for other sizes); with symbolic
    sizes (``torch.export``) only where provable, without constraining the sizes."""
    if torch.jit.is_tracing():
        return False
    return all(statically_known_true(a == b) for a, b in zip(x.shape[-2:], size))


def resize_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinearly resize x: Tensor (N, C, h, w) to (N, C, *size) with ``align_corners=False``.

    This is the project's one resize policy for feature maps, logits and probabilities.
    Returns x itself when it already has that size.
    """
    size = (_plain_size(size[0]), _plain_size(size[1]))
    if _known_same_size(x, size):
        return x
    use_matmul = _impl == "matmul" or (_impl == "auto" and x.is_cuda)
    if use_matmul and x.dim() == 4 and x.is_floating_point():
        return _resize_matmul(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
