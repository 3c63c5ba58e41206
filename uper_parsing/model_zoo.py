"""The shipped configs, found by name wherever the package is: ``get_config_file(
"ade20k/upernet_R50_bs16_160k.yaml")`` (detectron2's ``model_zoo.get_config_file``).

A wheel carries the repository's ``configs/`` as ``uper_parsing/configs`` (``setup.py``); a source
checkout reads ``configs/`` at the repository root. The folder layout is the same in both, so
``_BASE_`` chains (paths relative to the including file) resolve from either.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from .config import CfgNode, get_cfg

__all__ = ["config_root", "get_config", "get_config_file", "list_configs"]

_PACKAGE_DIR = Path(__file__).resolve().parent


def config_root() -> Path:
    """The folder of the shipped configs: ``uper_parsing/configs`` in an installed wheel, else
    ``configs/`` next to the package in a source checkout."""
    for candidate in (_PACKAGE_DIR / "configs", _PACKAGE_DIR.parent / "configs"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"No shipped configs: neither {_PACKAGE_DIR / 'configs'} (an installed wheel) nor "
        f"{_PACKAGE_DIR.parent / 'configs'} (a source checkout) is a folder"
    )


def list_configs() -> list[str]:
    """Every shipped config, as the relative name ``get_config_file`` takes, sorted."""
    root = config_root()
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*.yaml"))


def get_config_file(config_path: str) -> str:
    """The absolute path of the shipped config ``config_path``.

    Args:
        config_path: its name relative to the configs folder, e.g.
            ``"ade20k/upernet_R50_bs16_160k.yaml"`` (a leading ``configs/`` is accepted, so a
            repository path works too).

    Raises:
        FileNotFoundError: naming the config, the folder searched and the closest names.
    """
    name = config_path.removeprefix("configs/")
    path = config_root() / name
    if not path.is_file():
        close = difflib.get_close_matches(name, list_configs(), n=3, cutoff=0.4)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise FileNotFoundError(f"No shipped config {config_path!r} in {config_root()}{hint}")
    return str(path)


def get_config(config_path: str) -> CfgNode:
    """The default config merged with the shipped config ``config_path`` (its ``_BASE_`` chain
    included); not frozen."""
    cfg = get_cfg()
    cfg.merge_from_file(get_config_file(config_path))
    return cfg
