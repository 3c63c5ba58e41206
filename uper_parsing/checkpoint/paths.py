"""iopath handlers for the URL schemes ``MODEL.WEIGHTS`` accepts besides paths and http(s)."""

from __future__ import annotations

import os
from typing import IO, Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from iopath.common.file_io import HTTPURLHandler, PathHandler, PathManager

__all__ = [
    "DETECTRON2_MODEL_ZOO",
    "Detectron2URLHandler",
    "FileURLHandler",
    "register_url_handlers",
]

# Where detectron2's "detectron2://" names point (its model zoo and ImageNet backbones)
DETECTRON2_MODEL_ZOO = "https://dl.fbaipublicfiles.com/detectron2/"


class FileURLHandler(PathHandler):
    """``file:///abs/path`` (and ``file://localhost/abs/path``) -> the local path."""

    PREFIX = "file://"

    def _get_supported_prefixes(self) -> list[str]:
        return [self.PREFIX]

    @staticmethod
    def to_local(url: str) -> str:
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{url}: file URLs must name a local file (file:///path)")
        return url2pathname(parsed.path)

    def _get_local_path(self, path: str, force: bool = False, **kwargs: Any) -> str:
        self._check_kwargs(kwargs)
        return self.to_local(path)

    def _open(self, path: str, mode: str = "r", buffering: int = -1, **kwargs: Any) -> IO[Any]:
        self._check_kwargs(kwargs)
        return open(self.to_local(path), mode, buffering=buffering)

    def _exists(self, path: str, **kwargs: Any) -> bool:
        self._check_kwargs(kwargs)
        return os.path.exists(self.to_local(path))

    def _isfile(self, path: str, **kwargs: Any) -> bool:
        self._check_kwargs(kwargs)
        return os.path.isfile(self.to_local(path))


class Detectron2URLHandler(PathHandler):
    """``detectron2://<name>`` -> ``DETECTRON2_MODEL_ZOO + <name>``, fetched (and cached) through
    ``path_manager``'s http handler, as detectron2 resolves these names."""

    PREFIX = "detectron2://"

    def __init__(self, path_manager: PathManager) -> None:
        super().__init__()
        self.path_manager = path_manager

    def _get_supported_prefixes(self) -> list[str]:
        return [self.PREFIX]

    def _get_local_path(self, path: str, force: bool = False, **kwargs: Any) -> str:
        url = DETECTRON2_MODEL_ZOO + path[len(self.PREFIX) :]
        return self.path_manager.get_local_path(url, force=force, **kwargs)

    def _open(self, path: str, mode: str = "r", buffering: int = -1, **kwargs: Any) -> IO[Any]:
        url = DETECTRON2_MODEL_ZOO + path[len(self.PREFIX) :]
        return self.path_manager.open(url, mode, buffering=buffering, **kwargs)


def register_url_handlers(path_manager: PathManager) -> PathManager:
    """Teach ``path_manager`` http(s) / ftp, ``file://`` and ``detectron2://``. Returns it."""
    path_manager.register_handler(HTTPURLHandler())
    path_manager.register_handler(FileURLHandler())
    path_manager.register_handler(Detectron2URLHandler(path_manager))
    return path_manager
