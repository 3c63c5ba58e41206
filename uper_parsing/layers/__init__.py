from .conv import ConvNormAct
from .fold_bn import fold_batch_norms
from .nms import batched_nms_top
from .norm import LayerNorm2d, convert_frozen_batchnorm, get_norm
from .resize import RESIZE_IMPLS, get_resize_impl, resize_impl, resize_to, set_resize_impl
from .shape_spec import ShapeSpec
from .wrappers import pad_to_multiple, pad_to_size, stack_padded

__all__ = [
    "ShapeSpec",
    "ConvNormAct",
    "get_norm",
    "convert_frozen_batchnorm",
    "fold_batch_norms",
    "batched_nms_top",
    "LayerNorm2d",
    "resize_to",
    "set_resize_impl",
    "get_resize_impl",
    "resize_impl",
    "RESIZE_IMPLS",
    "pad_to_size",
    "pad_to_multiple",
    "stack_padded",
]
