"""Where builtin datasets live: ``$UPER_PARSING_DATASETS`` (default ``./datasets``)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATASETS_ENV", "datasets_root"]

DATASETS_ENV = "UPER_PARSING_DATASETS"


def datasets_root() -> Path:
    """Root folder of the builtin datasets, read from the environment at each call."""
    return Path(os.environ.get(DATASETS_ENV, "datasets")).expanduser()
