"""What every weight converter shares: the ``Conversion`` record and rule-table renaming.

A converter (``checkpoint.detectron2``, ``checkpoint.hf_upernet``, ...) renames every key of a
source state dict by a table of ``(regex, target)`` rules with :func:`rename_keys`, drops only keys
it lists as safe to drop, and returns a :class:`Conversion` that accounts for every source key.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch

__all__ = ["Conversion", "Rule", "as_tensors", "rename_keys"]

# The ResNet inside a ResNet-FPN (detectron2's name and this project's)
_RESNET_IN_FPN = "backbone.bottom_up."

# A renaming rule: (regex matching a whole source key, target). The target is called with the match
# and the converter's context object and returns the new key.
Rule = tuple[str, Callable[[re.Match, Any], str]]


@dataclasses.dataclass
class Conversion:
    """A converted state dict and the account of every source key.

    Attributes:
        state_dict: this project's names -> tensors.
        kind: "model" (a whole model: keys as in ``build_model(cfg).state_dict()``), "resnet" (a
            bare ``ResNet`` with its own names: ``stem.conv1.weight``, ``res2.0.bn1.weight``) or
            "backbone" (a bare backbone of another kind, with the names of that backbone module).
        source_format: the naming scheme of the source keys ("detectron2", "caffe2", "mmseg",
            "hf-upernet", "csail", "csail-upp", "timm", "torchvision").
        author: the file's ``__author__`` (or the format when it has none).
        renamed: source key -> key in ``state_dict``.
        ignored: source keys dropped on purpose.
        filled: keys of ``state_dict`` with no source (e.g. running mean 0 / var 1 of Caffe2 BN).
        edited: keys of ``state_dict`` whose tensor is not its source's as it is -> what was done
            (rows dropped or reordered, reshaped).
        metadata: the class lists the weights were trained with (multi-task metadata: see
            ``checkpoint.metadata``), when the converter knows them.
    """

    state_dict: dict[str, torch.Tensor]
    kind: str
    source_format: str
    author: str
    renamed: dict[str, str]
    ignored: list[str]
    filled: list[str]
    edited: dict[str, str] = dataclasses.field(default_factory=dict)
    metadata: dict[str, Any] | None = None

    def resnet_state_dict(self, prefix: str = _RESNET_IN_FPN) -> dict[str, torch.Tensor]:
        """The ResNet part with ``ResNet``'s own names (for ``MODEL.BACKBONE.PRETRAINED``):
        everything of a "resnet" conversion, the keys under ``prefix`` of a "model" one."""
        if self.kind == "resnet":
            return dict(self.state_dict)
        n = len(prefix)
        return {k[n:]: v for k, v in self.state_dict.items() if k.startswith(prefix)}

    def summary(self) -> str:
        """One line: what was converted, renamed, filled and ignored."""
        text = (
            f"{self.source_format} {self.kind} by '{self.author}': {len(self.renamed)} tensors "
            f"renamed, {len(self.filled)} filled, {len(self.ignored)} ignored"
        )
        text += f" ({', '.join(self.ignored)})" if self.ignored else ""
        edits = "; ".join(f"{key}: {what}" for key, what in self.edited.items())
        return text + (f"; {len(self.edited)} edited ({edits})" if self.edited else "")


def as_tensors(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """``{name: ndarray | Tensor}`` -> ``{name: Tensor}``; any other value is an error naming it."""
    out = {}
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{key} holds a {type(value).__name__}, not an array or tensor")
        out[key] = value
    return out


def rename_keys(
    keys: Iterable[str], rules: list[Rule], ignored: str, ctx: Any, source: str
) -> tuple[dict[str, str], list[str]]:
    """Rename every key by the first rule whose regex matches it whole, or list it as ignored
    when it matches the regex ``ignored`` whole (``r"(?!)"`` ignores nothing).

    Returns: ({source key: new key}, [ignored keys]). Raises ValueError naming the keys that match
    no rule (``source`` names the format in that message).
    """
    compiled = [(re.compile(pattern), target) for pattern, target in rules]
    renamed, dropped, unknown = {}, [], []
    for key in sorted(keys):
        if re.fullmatch(ignored, key):
            dropped.append(key)
            continue
        match = next(((m, t) for r, t in compiled if (m := r.fullmatch(key))), None)
        if match is None:
            unknown.append(key)
        else:
            renamed[key] = match[1](match[0], ctx)
    if unknown:
        raise ValueError(
            f"{len(unknown)} {source} key(s) have no counterpart in this project and are not "
            f"known to be safe to drop: {', '.join(unknown[:20])}"
            + (" ..." if len(unknown) > 20 else "")
        )
    return renamed, dropped
