"""The meta-architecture registry and ``build_model``."""

from __future__ import annotations

import logging

import torch
from torch import nn

from ...utils.env import usable_device
from ...utils.registry import Registry

__all__ = ["META_ARCH_REGISTRY", "build_model"]

logger = logging.getLogger(__name__)

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = """
Registry of meta-architectures: whole models built as ``MetaArch(cfg)``.
"""


def build_model(cfg) -> nn.Module:
    """Build ``cfg.MODEL.META_ARCHITECTURE`` and move it to ``cfg.MODEL.DEVICE`` (the CPU, with a
    warning, when CUDA is absent), in channels-last memory when ``MODEL.CHANNELS_LAST``: 4-d
    weights become NHWC, and convolutions then return NHWC activations whatever the input's
    layout. The model is not loaded with ``MODEL.WEIGHTS`` here."""
    model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    model.to(torch.device(usable_device(cfg.MODEL.DEVICE)))
    if cfg.MODEL.CHANNELS_LAST:
        model.to(memory_format=torch.channels_last)
    logger.info("Model:\n%s", model)
    return model
