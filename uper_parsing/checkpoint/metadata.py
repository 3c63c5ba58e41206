"""The config and the class lists a checkpoint was trained with, stored in the checkpoint itself,
so that a model can be built, run and drawn without its config file or its datasets.

A ``.pth`` file holds the metadata (its task family's ``metadata_keys``: class names, colours, id
maps, ignore label, ``evaluator_type``) as its top-level ``"metadata"`` entry (plain types: dicts,
lists, strings, numbers) and the full config as YAML text under ``"config"``; a ``.safetensors``
file holds both as header strings, ``"uper_parsing.metadata"`` (JSON) and ``"uper_parsing.config"``.
The trainer's checkpointer writes both; ``tools/convert_weights.py`` writes the metadata of the
dataset the weights were trained on, and the config when given one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from .detectron2 import load_torch_file
from .paths import resolve_weights_path

__all__ = [
    "CONFIG_KEY",
    "METADATA_KEY",
    "SAFETENSORS_CONFIG_KEY",
    "SAFETENSORS_METADATA_KEY",
    "plain_metadata",
    "read_checkpoint_config",
    "read_checkpoint_metadata",
    "read_checkpoint_record",
]

METADATA_KEY = "metadata"
CONFIG_KEY = "config"
SAFETENSORS_METADATA_KEY = "uper_parsing.metadata"
SAFETENSORS_CONFIG_KEY = "uper_parsing.config"


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


def _safetensors_header(path: str) -> tuple[str | None, dict[str, Any] | None]:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        header = f.metadata() or {}
    text = header.get(SAFETENSORS_METADATA_KEY)
    return header.get(SAFETENSORS_CONFIG_KEY), None if text is None else json.loads(text)


def read_checkpoint_record(path: str) -> tuple[str | None, dict[str, Any] | None]:
    """``(config, metadata)`` stored in the checkpoint at ``path`` (a path or URL, as
    ``MODEL.WEIGHTS``): the config as YAML text and the metadata dict, each None when the file
    stores none (always for ``.pkl`` files: detectron2's; older checkpoints of this project).

    Raises:
        ValueError naming the file when an entry has the wrong type.
    """
    local = resolve_weights_path(path, setting="MODEL.WEIGHTS")
    if local.endswith(".pkl"):  # detectron2 / Caffe2 pickles: never written with class lists
        return None, None
    if local.endswith(".safetensors"):
        config, metadata = _safetensors_header(local)
    else:
        entries = _torch_entries(local)
        entries = entries if isinstance(entries, Mapping) else {}
        config, metadata = entries.get(CONFIG_KEY), entries.get(METADATA_KEY)
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ValueError(
            f"{os.fspath(path)}: its '{METADATA_KEY}' entry is a {type(metadata).__name__}, "
            "not a dict of class lists"
        )
    if config is not None and not isinstance(config, str):
        raise ValueError(
            f"{os.fspath(path)}: its '{CONFIG_KEY}' entry is a {type(config).__name__}, not the "
            "YAML text of a config"
        )
    return config, None if metadata is None else dict(metadata)


def read_checkpoint_metadata(path: str) -> dict[str, Any] | None:
    """The metadata stored in the checkpoint at ``path`` (see ``read_checkpoint_record``)."""
    return read_checkpoint_record(path)[1]


def read_checkpoint_config(path: str) -> str | None:
    """The config (YAML text) stored in the checkpoint at ``path`` (``read_checkpoint_record``)."""
    return read_checkpoint_record(path)[0]
