"""``MAPPER_REGISTRY``: dataset dict -> model input, chosen by ``INPUT.DATASET_MAPPER_NAME``."""

from __future__ import annotations

from typing import Any

from ...utils.registry import Registry

__all__ = ["MAPPER_REGISTRY", "build_mapper"]


class _MapperRegistry(Registry):
    """fvcore ``Registry`` whose ``register`` also accepts a short name (``"sem_seg"``)."""

    def register(self, obj: Any = None, *, name: str | None = None) -> Any:
        if obj is not None:
            self._do_register(name or obj.__name__, obj)
            return obj

        def deco(cls: Any) -> Any:
            self._do_register(name or cls.__name__, cls)
            return cls

        return deco


MAPPER_REGISTRY = _MapperRegistry("MAPPER")
MAPPER_REGISTRY.__doc__ = """
Registry of dataset mappers: classes called as ``Mapper(cfg, is_train)`` whose instances map one
dataset dict to one model input dict.
"""


def build_mapper(cfg: Any, is_train: bool) -> Any:
    """The mapper registered under ``cfg.INPUT.DATASET_MAPPER_NAME``, built from ``cfg``."""
    return MAPPER_REGISTRY.get(cfg.INPUT.DATASET_MAPPER_NAME)(cfg, is_train)
