"""Export of the segmentation models to ONNX and TorchScript (``tools/export_model.py``).

``exportable_model(model)`` wraps a built model into one traceable function (image tensor in,
named score maps out; the contract is in ``wrappers``); ``export_onnx`` / ``export_torchscript``
write it with dynamic batch, height and width. Adaptive average pooling and PrRoIPool are
swapped for forms built from the runtime size (``pooling``) only inside the wrapper's copy.
"""

from .exporters import EXPORT_FORMATS, INPUT_NAME, export_onnx, export_torchscript
from .pooling import (
    ExportableAdaptiveAvgPool2d,
    ExportablePrRoIPool2d,
    adaptive_avg_pool_matrix,
    with_exportable_pools,
)
from .wrappers import (
    EXPORTABLE_MODELS,
    ExportablePanopticSemantic,
    ExportableParser,
    ExportableSegmentor,
    NotExportableError,
    exportable_model,
)

__all__ = [
    "EXPORT_FORMATS",
    "EXPORTABLE_MODELS",
    "INPUT_NAME",
    "ExportableAdaptiveAvgPool2d",
    "ExportableParser",
    "ExportablePanopticSemantic",
    "ExportablePrRoIPool2d",
    "ExportableSegmentor",
    "NotExportableError",
    "adaptive_avg_pool_matrix",
    "export_onnx",
    "export_torchscript",
    "exportable_model",
    "with_exportable_pools",
]
