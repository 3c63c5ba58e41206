"""The class lists a checkpoint was trained with, stored in the checkpoint itself, so that a model
can size its heads without the training set on disk.

A ``.pth`` file holds them as its top-level ``"metadata"`` entry (plain types: dicts, lists,
strings, numbers), a ``.safetensors`` file as JSON under the header key
``"uper_parsing.metadata"``. ``tools/convert_weights.py`` writes them when the converter knows
them (``--from csail-upp``: Broden+).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from .detectron2 import load_torch_file
from .paths import resolve_weights_path

__all__ = ["METADATA_KEY", "SAFETENSORS_METADATA_KEY", "plain_metadata", "read_checkpoint_metadata"]

METADATA_KEY = "metadata"
SAFETENSORS_METADATA_KEY = "uper_parsing.metadata"


def plain_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """``metadata`` as plain JSON types (tuples become lists), as checkpoints store it.

    Raises:
        TypeError naming the value that is not plain (a tensor, an object ...).
    """
    return json.loads(json.dumps(dict(metadata)))


def _torch_entries(path: str) -> Any:
    """The top level of a torch file, tensors memory-mapped where the format allows."""
    try:
        return load_torch_file(path, mmap=True)
    except RuntimeError:  # the legacy (non-zip) format cannot be memory-mapped
        return load_torch_file(path)


def _safetensors_metadata(path: str) -> dict[str, Any] | None:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        text = (f.metadata() or {}).get(SAFETENSORS_METADATA_KEY)
    return None if text is None else json.loads(text)


def read_checkpoint_metadata(path: str) -> dict[str, Any] | None:
    """The metadata stored in the checkpoint at ``path`` (a path or URL, as ``MODEL.WEIGHTS``),
    or None when it stores none (always for ``.pkl`` files: detectron2's).

    Raises:
        ValueError naming the file when its metadata entry is not a dict.
    """
    local = resolve_weights_path(path, setting="MODEL.WEIGHTS")
    if local.endswith(".pkl"):  # detectron2 / Caffe2 pickles: never written with class lists
        return None
    if local.endswith(".safetensors"):
        metadata = _safetensors_metadata(local)
    else:
        entries = _torch_entries(local)
        metadata = entries.get(METADATA_KEY) if isinstance(entries, Mapping) else None
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ValueError(
            f"{os.fspath(path)}: its '{METADATA_KEY}' entry is a {type(metadata).__name__}, "
            "not a dict of class lists"
        )
    return None if metadata is None else dict(metadata)
