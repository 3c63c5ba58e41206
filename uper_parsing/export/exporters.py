"""Write an exportable wrapper (``wrappers.exportable_model``) as an ONNX file or a TorchScript
module, with dynamic batch, height and width.

ONNX goes through torch's default exporter, ``torch.onnx.export(..., dynamo=True)`` with
``dynamic_shapes``: ``torch.export`` traces the wrapper with symbolic sizes and onnxscript
translates the graph. It exports every supported model with dynamic sizes, so the deprecated
TorchScript-based exporter (``dynamo=False`` with ``dynamic_axes``) is not used. The exporter
traces with size-oblivious reasoning, so a sample of batch 1 keeps the batch dynamic; the
graph has no branch on sizes (the wrapper pads, crops and pools with size arithmetic only) and
runs at any height and width, smaller than the sample or not divisible by the size
divisibility included.

TorchScript is ``torch.jit.trace`` of the same wrapper: traced sizes stay sizes (``resize_to``
and the exportable pooling build everything from them), so the module runs at other sizes.

Resizing runs as ``F.interpolate`` while exporting (``MODEL.RESIZE_IMPL`` "matmul" builds its
weight matrices from Python sizes, which a trace would fix).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import nn

from ..layers import resize_impl

__all__ = ["EXPORT_FORMATS", "INPUT_NAME", "export_onnx", "export_torchscript"]

INPUT_NAME = "images"


def _check_sample(sample: torch.Tensor) -> None:
    """sample must be a float (N, 3, H, W) image batch."""
    if sample.dim() != 4 or sample.shape[1] != 3 or not sample.is_floating_point():
        raise ValueError(
            f"the export sample must be a float (N, 3, H, W) image batch, got "
            f"{tuple(sample.shape)} {sample.dtype}"
        )


def export_onnx(
    wrapper: nn.Module, sample: torch.Tensor, path: str, *, opset: int | None = None
) -> str:
    """Export ``wrapper`` to the ONNX file ``path``: input ``images`` (batch, 3, height, width)
    float, outputs named ``wrapper.output_names``, the three sizes dynamic. Returns ``path``.

    Args:
        sample: Tensor (N, 3, H, W) float: an example input (its values only drive tracing).
        opset: ONNX opset version (default: the exporter's).
    """
    _check_sample(sample)
    dims = {
        0: torch.export.Dim("batch", min=1),
        2: torch.export.Dim("height", min=1),
        3: torch.export.Dim("width", min=1),
    }
    with resize_impl("interpolate"), torch.no_grad():
        program = torch.onnx.export(
            wrapper.eval(),
            (sample,),
            dynamo=True,
            verbose=False,
            input_names=[INPUT_NAME],
            output_names=list(wrapper.output_names),
            dynamic_shapes=(dims,),
            opset_version=opset,
        )
    _make_parent(path)
    program.save(path)
    return path


def export_torchscript(wrapper: nn.Module, sample: torch.Tensor, path: str) -> str:
    """Trace ``wrapper`` on ``sample`` (Tensor (N, 3, H, W) float) with ``torch.jit.trace`` and
    save the module to ``path`` (``torch.jit.load`` reads it). Returns ``path``."""
    _check_sample(sample)
    with resize_impl("interpolate"), torch.no_grad():
        traced = torch.jit.trace(wrapper.eval(), (sample,), check_trace=False)
    _make_parent(path)
    torch.jit.save(traced, path)
    return path


def _make_parent(path: str) -> None:
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)


# --format -> exporter(wrapper, sample, path, **options) -> path
EXPORT_FORMATS: dict[str, Callable[..., str]] = {
    "onnx": export_onnx,
    "torchscript": export_torchscript,
}
