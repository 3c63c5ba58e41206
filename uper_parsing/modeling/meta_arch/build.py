"""The meta-architecture registry and ``build_model``."""

from __future__ import annotations

import logging

import torch
from torch import nn

from ...layers import fold_batch_norms, set_resize_impl
from ...utils import comm
from ...utils.env import usable_device
from ...utils.registry import Registry

__all__ = ["META_ARCH_REGISTRY", "build_model", "compile_submodules", "prepare_for_inference"]

logger = logging.getLogger(__name__)

META_ARCH_REGISTRY = Registry("META_ARCH")
META_ARCH_REGISTRY.__doc__ = """
Registry of meta-architectures: whole models built as ``MetaArch(cfg)``. A meta-architecture
names in ``compiled_submodules`` the attributes that ``MODEL.COMPILE`` compiles (modules, or
``ModuleDict`` s whose every entry is compiled).
"""


def build_model(cfg) -> nn.Module:
    """Build ``cfg.MODEL.META_ARCHITECTURE`` and move it to ``cfg.MODEL.DEVICE`` (the CPU, with a
    warning, when CUDA is absent), in channels-last memory when ``MODEL.CHANNELS_LAST``: 4-d
    weights become NHWC, and convolutions then return NHWC activations whatever the input's
    layout. The model is not loaded with ``MODEL.WEIGHTS`` here.

    Process-wide settings follow the config too: ``MODEL.RESIZE_IMPL`` (``layers.resize_to``).
    With ``MODEL.COMPILE.ENABLED`` the ``compiled_submodules`` are compiled in place (their
    parameter names and checkpoints stay those of the eager model)."""
    set_resize_impl(cfg.MODEL.RESIZE_IMPL)
    model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    model.to(torch.device(usable_device(cfg.MODEL.DEVICE)))
    if cfg.MODEL.CHANNELS_LAST:
        model.to(memory_format=torch.channels_last)
    logger.info("Model:\n%s", model)
    if cfg.MODEL.COMPILE.ENABLED:
        compile_submodules(model, cfg.MODEL.COMPILE.MODE, cfg.MODEL.COMPILE.BACKEND)
    return model


def compile_submodules(
    model: nn.Module, mode: str = "default", backend: str = "inductor"
) -> list[str]:
    """``torch.compile`` (in place, ``nn.Module.compile``) each of ``model.compiled_submodules``
    that is set; entries of a ``ModuleDict`` one by one. Returns the names compiled."""
    names = []
    for name in getattr(model, "compiled_submodules", ()):
        module = getattr(model, name, None)
        if module is None:
            continue
        entries = module.items() if isinstance(module, nn.ModuleDict) else [("", module)]
        for key, entry in entries:
            entry.compile(mode=None if backend != "inductor" else mode, backend=backend)
            names.append(f"{name}.{key}" if key else name)
    logger.info("torch.compile (%s, mode %s): %s", backend, mode, ", ".join(names))
    return names


FOLD_BATCH_NORM_CHOICES = ("auto", "always", "never")


def folds_batch_norms(cfg, device: torch.device) -> bool:
    """Whether ``TEST.FOLD_BATCH_NORM`` folds a model of ``cfg`` on ``device``: "auto" folds on
    the CPU and under ``MODEL.COMPILE``, where a folded convolution adds its bias in the same
    pass."""
    choice = cfg.TEST.FOLD_BATCH_NORM
    if choice not in FOLD_BATCH_NORM_CHOICES:
        raise ValueError(
            f"TEST.FOLD_BATCH_NORM is {choice!r}; expected one of {FOLD_BATCH_NORM_CHOICES}"
        )
    if choice != "auto":
        return choice == "always"
    return cfg.MODEL.COMPILE.ENABLED or device.type == "cpu"


def prepare_for_inference(model: nn.Module, cfg) -> nn.Module:
    """Put a model that will only run inference (its weights loaded) in eval mode and, as
    ``TEST.FOLD_BATCH_NORM`` says, fold its BatchNorms into their convolutions (in place; the
    model cannot train afterwards). Returns ``model``."""
    model.eval()
    device = next(model.parameters()).device
    if folds_batch_norms(cfg, device):
        folded = fold_batch_norms(comm.unwrap_model(model))
        logger.info("Folded %d BatchNorms into their convolutions (TEST.FOLD_BATCH_NORM)", folded)
    return model
