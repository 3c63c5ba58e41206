"""The classes one label map is drawn with: names, colours and the label that means "unlabelled"."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .colormap import palette_for

__all__ = ["ClassTable"]


@dataclass(frozen=True)
class ClassTable:
    """Names and colours (RGB) of the classes of one label map; ids without a name are shown as
    the id, ids without a colour get the deterministic palette's.

    Attributes:
        names: class names by id.
        colors: (K, 3) RGB colours by id, or ``None``.
        ignore_label: the label left undrawn (as are negative labels).
    """

    names: Sequence[str] = ()
    colors: Sequence[Sequence[int]] | None = None
    ignore_label: int = 255

    @classmethod
    def from_metadata(
        cls, metadata: Any, group: str, ignore_label: int | None = None
    ) -> ClassTable:
        """The ``<group>_classes`` / ``<group>_colors`` of ``metadata`` (either may be missing;
        ``metadata`` may be ``None``) and its ``ignore_label`` (default 255) unless given."""
        if ignore_label is None:
            ignore_label = int(getattr(metadata, "ignore_label", 255))
        names = [str(c) for c in getattr(metadata, f"{group}_classes", None) or []]
        return cls(names, getattr(metadata, f"{group}_colors", None), ignore_label)

    def name(self, class_id: int) -> str:
        return self.names[class_id] if 0 <= class_id < len(self.names) else str(class_id)

    def palette(self, num_classes: int) -> np.ndarray:
        """(K, 3) uint8 RGB for K = max(num_classes, number of names, 1)."""
        return palette_for(self.colors, max(num_classes, len(self.names), 1))

    def valid(self, labels: np.ndarray) -> np.ndarray:
        """(H, W) bool: the pixels of ``labels`` (H, W) int that are drawn."""
        return (labels >= 0) & (labels != self.ignore_label)
