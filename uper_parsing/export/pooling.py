"""Pooling that exports with dynamic input sizes: adaptive average pooling and PrRoIPool as two
matrix products whose weights are built inside the graph from the input's runtime size.

``nn.AdaptiveAvgPool2d`` exports with the bin bounds of the size traced: torch's ONNX exporter
decomposes it into gathers at fixed indices, so at another size onnxruntime fails (an index out
of range) or pools the wrong pixels. Adaptive average pooling is linear and separable: bin i of
an axis of ``length`` pixels averages pixels ``floor(i * length / bins)`` to
``ceil((i + 1) * length / bins) - 1``, so pooling is ``M_h @ x @ M_w^T`` with
``M[i, j] = 1 / bin size`` inside bin i and 0 elsewhere. Built from tensor ops on the traced
size, ``M`` follows the input at run time.

These modules are swapped in only for export (:func:`with_exportable_pools`); training and
inference keep PyTorch's pooling kernels.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..modeling.sem_seg_heads.ppm import PrRoIPool2d, prroi_pool_matrix

__all__ = [
    "adaptive_avg_pool_matrix",
    "ExportableAdaptiveAvgPool2d",
    "ExportablePrRoIPool2d",
    "separable_map",
    "with_exportable_pools",
]


def adaptive_avg_pool_matrix(
    length: int | torch.SymInt | torch.Tensor,
    bins: int,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Weights of adaptive average pooling along one axis, as ``F.adaptive_avg_pool2d`` bins it:
    bin i covers pixels ``[floor(i * length / bins), ceil((i + 1) * length / bins))``.

    Args:
        length: pixels along the axis; a traced size (``torch.export``'s SymInt, or the 0-d
            tensor ``torch.jit.trace`` gives for ``x.shape[i]``) keeps the matrix dynamic.
        bins: output size along the axis.

    Returns: Tensor (bins, length): row i holds 1 / (bin i's pixel count) on its pixels.
    """
    index = torch.arange(bins, device=device)
    start = torch.div(index * length, bins, rounding_mode="floor")
    end = torch.div((index + 1) * length + bins - 1, bins, rounding_mode="floor")
    pixels = torch.arange(length, device=device)
    inside = (pixels >= start[:, None]) & (pixels < end[:, None])
    return inside.to(dtype) / (end - start).to(dtype)[:, None]


def separable_map(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``rows @ x @ cols.T`` as two plain 2-d matrix products: a broadcast batched matmul makes
    the exporter guard on the sizes (that a pooled side is not 1), which would fix them.

    Args:
        x: Tensor (N, C, H, W).
        rows: Tensor (h, H); cols: Tensor (w, W).

    Returns: Tensor (N, C, h, w).
    """
    n, c, height, width = x.shape
    by_rows = x.transpose(-1, -2).reshape(-1, height) @ rows.T  # (N*C*W, h)
    by_rows = by_rows.reshape(n, c, width, rows.shape[0]).transpose(-1, -2)  # (N, C, h, W)
    return (by_rows.reshape(-1, width) @ cols.T).reshape(n, c, rows.shape[0], cols.shape[0])


def _pair(output_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(output_size, int):
        return output_size, output_size
    if len(output_size) != 2 or not all(isinstance(s, int) for s in output_size):
        raise ValueError(f"output_size must be an int or two ints, got {output_size!r}")
    return tuple(output_size)


class ExportableAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d(output_size)`` as ``M_h @ x @ M_w^T`` with the weights of
    :func:`adaptive_avg_pool_matrix` built from the runtime size: equal to
    ``F.adaptive_avg_pool2d`` (to the rounding of x's dtype) for every input size, in an
    exported graph too."""

    def __init__(self, output_size: int | tuple[int, int]) -> None:
        super().__init__()
        self.output_size = _pair(output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: Tensor (N, C, H, W). Returns: Tensor (N, C, *output_size)."""
        (height, width), (bins_h, bins_w) = x.shape[-2:], self.output_size
        rows = adaptive_avg_pool_matrix(height, bins_h, dtype=x.dtype, device=x.device)
        cols = adaptive_avg_pool_matrix(width, bins_w, dtype=x.dtype, device=x.device)
        return separable_map(x, rows, cols)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class ExportablePrRoIPool2d(nn.Module):
    """:class:`PrRoIPool2d` with its weights (``prroi_pool_matrix``, float64 as there) built in
    the graph from the runtime size instead of a cache keyed by Python ints."""

    def __init__(self, output_size: int | tuple[int, int]) -> None:
        super().__init__()
        self.output_size = _pair(output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: Tensor (N, C, H, W). Returns: Tensor (N, C, *output_size)."""
        (height, width), (bins_h, bins_w) = x.shape[-2:], self.output_size
        rows = prroi_pool_matrix(height, bins_h, device=x.device).to(x.dtype)
        cols = prroi_pool_matrix(width, bins_w, device=x.device).to(x.dtype)
        return separable_map(x, rows, cols)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


def _exportable(module: nn.Module) -> nn.Module | None:
    """The exportable replacement of a pooling module, None for any other module."""
    if isinstance(module, nn.AdaptiveAvgPool2d):
        if module.output_size is None or None in _as_tuple(module.output_size):
            raise ValueError(
                f"{module}: an output size of None (keep the input's size) has no exportable "
                "form here; give every output size"
            )
        return ExportableAdaptiveAvgPool2d(module.output_size)
    if isinstance(module, PrRoIPool2d):
        return ExportablePrRoIPool2d(module.output_size)
    return None


def _as_tuple(size) -> tuple:
    return tuple(size) if isinstance(size, (tuple, list)) else (size,)


def with_exportable_pools(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose ``nn.AdaptiveAvgPool2d`` and ``PrRoIPool2d`` modules are
    replaced by :class:`ExportableAdaptiveAvgPool2d` / :class:`ExportablePrRoIPool2d` (same
    output sizes, no parameters). ``model`` itself is unchanged."""
    model = copy.deepcopy(model)
    root = _exportable(model)
    if root is not None:
        return root
    for name, module in list(model.named_modules()):
        replacement = _exportable(module)
        if replacement is not None:
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name), attr, replacement)
    return model
