"""One registry per kind of component (fvcore's Registry, as detectron2 uses)."""

from fvcore.common.registry import Registry

__all__ = ["Registry"]
