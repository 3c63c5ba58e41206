from .conv import ConvNormAct
from .norm import LayerNorm2d, convert_frozen_batchnorm, get_norm
from .shape_spec import ShapeSpec
from .wrappers import pad_to_multiple, pad_to_size, resize_to, stack_padded

__all__ = [
    "ShapeSpec",
    "ConvNormAct",
    "get_norm",
    "convert_frozen_batchnorm",
    "LayerNorm2d",
    "resize_to",
    "pad_to_size",
    "pad_to_multiple",
    "stack_padded",
]
