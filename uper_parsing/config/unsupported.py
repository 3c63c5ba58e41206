"""Config keys a component would silently ignore, rejected by name when they hold a non-default
value (docs/ARCHITECTURE.md, "Keys a model rejects").

A component (a meta-architecture, an optimizer, a schedule) lists what it cannot honour as
:class:`UnsupportedKey` entries and calls :func:`reject_unsupported_keys` where it reads the
config; a default value never raises, so the shared defaults stay valid for every component.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from fvcore.common.config import CfgNode as _FvcoreCfgNode

__all__ = ["UnsupportedKey", "reject_unsupported_keys", "unsupported_key_errors"]


@dataclass(frozen=True)
class UnsupportedKey:
    """``key`` (a leaf such as ``"TEST.AUG.ENABLED"``, or a group such as ``"MODEL.RPN"``: every
    leaf under it) asks for ``feature``, which the component lacks."""

    key: str
    feature: str


@functools.cache
def _defaults() -> _FvcoreCfgNode:
    from .config import get_cfg

    return get_cfg()


def _node(cfg: _FvcoreCfgNode, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        if not isinstance(node, _FvcoreCfgNode) or part not in node:
            raise KeyError(f"UnsupportedKey names {key!r}, which the config does not declare")
        node = node[part]
    return node


def _leaves(node: Any, key: str) -> Iterator[str]:
    if not isinstance(node, _FvcoreCfgNode):
        yield key
        return
    for name, child in node.items():
        yield from _leaves(child, f"{key}.{name}")


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively: a YAML list and a default tuple of equal items are equal."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _shown(value: Any) -> str:
    """A value as it is written after a key on the command line."""
    return repr(value) if isinstance(value, str) else str(_plain(value))


def unsupported_key_errors(
    cfg: _FvcoreCfgNode, owner: str, keys: Iterable[UnsupportedKey]
) -> list[str]:
    """One message per leaf of ``keys`` whose value in ``cfg`` differs from the default:
    ``"TEST.AUG.ENABLED is True but PanopticFPN does not support test-time augmentation; set
    TEST.AUG.ENABLED False (the default)"``."""
    errors = []
    for entry in keys:
        for leaf in _leaves(_node(cfg, entry.key), entry.key):
            value, default = _node(cfg, leaf), _node(_defaults(), leaf)
            if _plain(value) != _plain(default):
                errors.append(
                    f"{leaf} is {_shown(value)} but {owner} does not support {entry.feature}; "
                    f"set {leaf} {_shown(default)} (the default)"
                )
    return errors


def reject_unsupported_keys(
    cfg: _FvcoreCfgNode, owner: str, keys: Iterable[UnsupportedKey]
) -> None:
    """Raise ``ValueError`` with the first of :func:`unsupported_key_errors` (and how many more
    there are)."""
    errors = unsupported_key_errors(cfg, owner, keys)
    if errors:
        more = len(errors) - 1
        more = f" ({more} more such key{'s' if more > 1 else ''})" if more else ""
        raise ValueError(errors[0] + more)
