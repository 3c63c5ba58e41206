"""``DatasetCatalog`` (name -> function returning dataset dicts) and ``MetadataCatalog``.

Both follow detectron2: registering a dataset records a function and touches nothing on disk; the
function runs when ``DatasetCatalog.get(name)`` is called. Metadata is an attribute bag whose
attributes, once set, cannot silently change.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["DatasetCatalog", "Metadata", "MetadataCatalog"]

logger = logging.getLogger(__name__)


class _DatasetCatalog:
    """Global registry of dataset functions: ``register(name, fn)``, ``get(name) -> list[dict]``."""

    def __init__(self) -> None:
        self._fns: dict[str, Callable[[], list[dict]]] = {}

    def register(self, name: str, func: Callable[[], list[dict]]) -> None:
        """Register ``func`` (no arguments, returns ``list[dict]``) under ``name``.

        Raises:
            ValueError: ``name`` is already registered.
            TypeError: ``func`` is not callable.
        """
        if not callable(func):
            raise TypeError(f"DatasetCatalog.register('{name}', ...) needs a callable")
        if name in self._fns:
            raise ValueError(f"Dataset '{name}' is already registered")
        self._fns[name] = func

    def get(self, name: str) -> list[dict]:
        """Call the function registered under ``name`` and return its dataset dicts.

        Raises:
            KeyError: ``name`` is not registered (the message lists the registered names).
        """
        try:
            func = self._fns[name]
        except KeyError:
            available = ", ".join(sorted(self._fns)) or "<none>"
            raise KeyError(
                f"Dataset '{name}' is not registered. Available datasets: {available}"
            ) from None
        return func()

    def list(self) -> list[str]:
        """Names of all registered datasets, in registration order."""
        return list(self._fns)

    def remove(self, name: str) -> None:
        """Forget the dataset ``name`` (KeyError when unknown)."""
        if name not in self._fns:
            raise KeyError(f"Dataset '{name}' is not registered")
        del self._fns[name]

    def __contains__(self, name: str) -> bool:
        return name in self._fns

    def __repr__(self) -> str:
        return f"DatasetCatalog(registered datasets: {', '.join(self._fns)})"


class Metadata:
    """Attribute bag describing one dataset (class names, colours, ignore label, ...).

    ``metadata.x = v`` and ``metadata.set(x=v)`` set an attribute; setting it again to a different
    value is an error, so two parts of a program cannot disagree about a dataset. Values that depend
    on the environment at read time (e.g. a root from ``UPER_PARSING_DATASETS``) are set with
    ``set_lazy(x=fn)``: ``fn()`` is called on every read.
    """

    def __init__(self, name: str = "") -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "_values", {})
        object.__setattr__(self, "_lazy", {})

    def __getattr__(self, key: str) -> Any:
        # Only called for attributes that are not found normally.
        if key.startswith("__") or key in ("_values", "_lazy", "name"):
            raise AttributeError(key)
        if key in self._lazy:
            return self._lazy[key]()
        if key in self._values:
            return self._values[key]
        known = ", ".join(sorted({*self._values, *self._lazy})) or "<none>"
        raise AttributeError(
            f"Metadata of dataset '{self.name}' has no attribute '{key}'. Available: {known}"
        )

    def __setattr__(self, key: str, value: Any) -> None:
        if key == "name":
            raise AttributeError("The name of a Metadata cannot be changed")
        if key in self._lazy:
            raise ValueError(
                f"Attribute '{key}' of metadata '{self.name}' is computed lazily and cannot be set"
            )
        if key in self._values:
            old = self._values[key]
            if not _same(old, value):
                raise ValueError(
                    f"Attribute '{key}' of metadata '{self.name}' cannot be set to a different "
                    f"value: it is {old!r}, new value {value!r}"
                )
            return
        self._values[key] = value

    def __delattr__(self, key: str) -> None:
        raise AttributeError(f"Attributes of metadata '{self.name}' cannot be deleted")

    def set(self, **kwargs: Any) -> Metadata:
        """Set several attributes at once; returns ``self``."""
        for k, v in kwargs.items():
            setattr(self, k, v)
        return self

    def set_lazy(self, **kwargs: Callable[[], Any]) -> Metadata:
        """Set attributes whose value is ``fn()`` at each read (``fn`` must be picklable)."""
        for k, fn in kwargs.items():
            if not callable(fn):
                raise TypeError(f"set_lazy needs callables; '{k}' is {type(fn).__name__}")
            if k in self._values or (k in self._lazy and self._lazy[k] is not fn):
                raise ValueError(f"Attribute '{k}' of metadata '{self.name}' is already set")
            self._lazy[k] = fn
        return self

    def get(self, key: str, default: Any = None) -> Any:
        """The attribute ``key``, or ``default`` when it is not set."""
        if key in self._lazy or key in self._values:
            return getattr(self, key)
        return default

    def as_dict(self) -> dict[str, Any]:
        """A copy of all attributes (lazy ones evaluated), plus ``name``."""
        out = copy.copy(self._values)
        out.update({k: fn() for k, fn in self._lazy.items()})
        out["name"] = self.name
        return out

    def __contains__(self, key: str) -> bool:
        return key in self._values or key in self._lazy

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "values": self._values, "lazy": self._lazy}

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "name", state["name"])
        object.__setattr__(self, "_values", state["values"])
        object.__setattr__(self, "_lazy", state["lazy"])

    def __repr__(self) -> str:
        keys = ", ".join(sorted({*self._values, *self._lazy}))
        return f"Metadata(name='{self.name}', attributes: {keys})"


def _same(a: Any, b: Any) -> bool:
    """Equality that also works for numpy arrays and nested lists / tuples of them."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


class _MetadataCatalog:
    """``MetadataCatalog.get(name)``: the ``Metadata`` of a dataset (created on first use)."""

    def __init__(self) -> None:
        self._metadata: dict[str, Metadata] = {}

    def get(self, name: str) -> Metadata:
        if name not in self._metadata:
            self._metadata[name] = Metadata(name)
        return self._metadata[name]

    def list(self) -> list[str]:
        return list(self._metadata)

    def remove(self, name: str) -> None:
        """Forget the metadata of ``name`` (KeyError when unknown)."""
        if name not in self._metadata:
            raise KeyError(f"No metadata for dataset '{name}'")
        del self._metadata[name]

    def __contains__(self, name: str) -> bool:
        return name in self._metadata


DatasetCatalog = _DatasetCatalog()
MetadataCatalog = _MetadataCatalog()
