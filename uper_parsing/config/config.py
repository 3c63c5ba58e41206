"""Config node, ``get_cfg`` and the ``configurable`` decorator.

``CfgNode`` is fvcore's (``_BASE_`` inheritance, ``merge_from_list``) with one addition: an unknown
key stops with an error that names the key, the file it came from and the closest valid keys.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import re
from collections.abc import Callable, Iterator
from typing import Any

from fvcore.common.config import CfgNode as _FvcoreCfgNode

__all__ = ["CfgNode", "ConfigKeyError", "get_cfg", "configurable", "all_keys"]


class ConfigKeyError(KeyError):
    """A key that the config does not declare."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


def all_keys(node: _FvcoreCfgNode, prefix: str = "") -> Iterator[str]:
    """Yield every leaf key of ``node`` as a dotted name (``SOLVER.BASE_LR``)."""
    for k, v in node.items():
        name = f"{prefix}{k}"
        if isinstance(v, _FvcoreCfgNode):
            yield from all_keys(v, name + ".")
        else:
            yield name


_MISSING_KEY = re.compile(r"Non-existent (?:config )?key: ([\w.]+)")


class CfgNode(_FvcoreCfgNode):
    """fvcore ``CfgNode`` whose unknown-key errors name the closest valid keys."""

    def _unknown_key_error(self, err: BaseException, source: str) -> ConfigKeyError:
        match = _MISSING_KEY.search(str(err))
        if match is None:
            raise err
        key = match.group(1)
        candidates = list(all_keys(self))
        close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.5)
        if not close:  # e.g. a misspelt group: suggest by the last component
            last = key.rsplit(".", 1)[-1]
            close = [c for c in candidates if c.rsplit(".", 1)[-1] == last][:3]
        hint = f"; closest valid keys: {', '.join(close)}" if close else ""
        return ConfigKeyError(f"Unknown config key '{key}' in {source}{hint}")

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        try:
            super().merge_from_file(cfg_filename, allow_unsafe=allow_unsafe)
        except (KeyError, AssertionError) as err:
            if isinstance(err, ConfigKeyError):
                raise
            raise self._unknown_key_error(err, f"config file {cfg_filename}") from None

    def merge_from_yaml_text(self, text: str, source: str) -> CfgNode:
        """Merge a config written as YAML text (``cfg.dump()``, as checkpoints store it);
        ``source`` names where the text comes from in errors."""
        try:
            self.merge_from_other_cfg(type(self).load_cfg(text))
        except (KeyError, AssertionError) as err:
            if isinstance(err, ConfigKeyError):
                raise
            raise self._unknown_key_error(err, source) from None
        return self

    def merge_from_list(self, cfg_list: list) -> CfgNode:
        try:
            super().merge_from_list(cfg_list)
        except (KeyError, AssertionError) as err:
            if isinstance(err, ConfigKeyError):
                raise
            raise self._unknown_key_error(err, "command-line overrides") from None
        return self


def get_cfg() -> CfgNode:
    """A fresh copy of the default config with every key the project declares."""
    from .defaults import _C

    return _C.clone()


def configurable(
    init_func: Callable | None = None, *, from_config: Callable | None = None
) -> Callable:
    """Let a constructor or a function be called with a config as well as with its arguments.

    Two forms:

    - ``@configurable`` on ``__init__``: ``Class(cfg, ...)`` passes the dict of
      ``Class.from_config(cfg, ...)`` to ``__init__``; ``Class(num_classes=3, ...)`` still works.
    - ``@configurable(from_config=f)`` on a function: ``func(cfg, ...)`` calls
      ``func(**f(cfg, ...))``; ``func(dataset=..., mapper=...)`` calls it as written. The
      wrapped function keeps ``f`` as ``func.from_config``.

    In both, a call is "with a config" when its first positional argument, or its ``cfg``
    keyword, is a ``CfgNode``; keyword arguments that ``from_config`` does not take go straight to
    the decorated callable, overriding what ``from_config`` returned.
    """
    if init_func is not None:
        if from_config is not None or init_func.__name__ != "__init__":
            raise TypeError(
                "@configurable without arguments decorates __init__ only; decorate a function "
                "with @configurable(from_config=...)"
            )
        return _configurable_init(init_func)
    if from_config is None or not inspect.isfunction(from_config):
        raise TypeError(
            f"@configurable(from_config=...) needs a function taking cfg first, got {from_config!r}"
        )
    return functools.partial(_configurable_function, from_config=from_config)


def _configurable_init(init_func: Callable) -> Callable:
    @functools.wraps(init_func)
    def wrapped(self, *args: Any, **kwargs: Any) -> None:
        from_config = getattr(type(self), "from_config", None)
        if from_config is None:
            raise AttributeError(f"{type(self).__name__} needs a classmethod from_config")
        if _called_with_cfg(*args, **kwargs):
            explicit = _get_args_from_config(from_config, *args, **kwargs)
            init_func(self, **explicit)
        else:
            init_func(self, *args, **kwargs)

    return wrapped


def _configurable_function(func: Callable, *, from_config: Callable) -> Callable:
    @functools.wraps(func)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if _called_with_cfg(*args, **kwargs):
            return func(**_get_args_from_config(from_config, *args, **kwargs))
        return func(*args, **kwargs)

    wrapped.from_config = from_config  # type: ignore[attr-defined]
    return wrapped


def _called_with_cfg(*args: Any, **kwargs: Any) -> bool:
    if args and isinstance(args[0], _FvcoreCfgNode):
        return True
    return isinstance(kwargs.get("cfg"), _FvcoreCfgNode)


def _get_args_from_config(from_config: Callable, *args: Any, **kwargs: Any) -> dict:
    signature = inspect.signature(from_config)
    params = list(signature.parameters)
    if not params or params[0] != "cfg":
        raise TypeError(f"{from_config.__qualname__} must take 'cfg' as its first argument")
    has_var_kw = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    if has_var_kw:
        return from_config(*args, **kwargs)
    # Arguments from_config does not take are passed straight to __init__
    extra = {k: kwargs.pop(k) for k in list(kwargs) if k not in signature.parameters}
    ret = from_config(*args, **kwargs)
    ret.update(extra)
    return ret
