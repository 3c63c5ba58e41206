"""Where weights come from: local paths and the URL schemes ``MODEL.WEIGHTS`` and
``MODEL.BACKBONE.PRETRAINED`` accept, as iopath handlers and as one function.

- a path, or ``file:///abs/path``;
- ``https://...`` / ``http://...``: downloaded once into the cache (``checkpoint.download``:
  ``$UPER_PARSING_CACHE``, default ``~/.cache/uper_parsing``), checked against the SHA-256 prefix
  a torch.hub-style file name carries;
- ``detectron2://<name>``: detectron2's model zoo (``DETECTRON2_MODEL_ZOO + <name>``);
- ``open-mmlab://<name>``: mmcv's names of ImageNet backbones (``OPEN_MMLAB_MODEL_ZOO``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import IO, Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from iopath.common.file_io import PathHandler, PathManager

from .download import cached_download

__all__ = [
    "DETECTRON2_MODEL_ZOO",
    "OPEN_MMLAB_MODEL_ZOO",
    "CachedHTTPHandler",
    "FileURLHandler",
    "ModelZooURLHandler",
    "detectron2_url",
    "open_mmlab_url",
    "register_url_handlers",
    "resolve_weights_path",
]

# Where detectron2's "detectron2://" names point (its model zoo and ImageNet backbones)
DETECTRON2_MODEL_ZOO = "https://dl.fbaipublicfiles.com/detectron2/"
# The "open-mmlab://" names of the backbones this project's recipes use, as mmcv's
# mmcv/model_zoo/open_mmlab.json resolves them (ResNetV1c: deep stem, mmseg's ResNet-D8 recipes)
OPEN_MMLAB_MODEL_ZOO = {
    "resnet50_v1c": "https://download.openmmlab.com/pretrain/third_party/resnet50_v1c-2cccc1ad.pth",
    "resnet101_v1c": (
        "https://download.openmmlab.com/pretrain/third_party/resnet101_v1c-e67eebb6.pth"
    ),
}


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


class CachedHTTPHandler(PathHandler):
    """``http(s)://...`` -> the cached download (``checkpoint.download.cached_download``)."""

    def _get_supported_prefixes(self) -> list[str]:
        return ["http://", "https://"]

    def _get_local_path(self, path: str, force: bool = False, **kwargs: Any) -> str:
        self._check_kwargs(kwargs)
        return cached_download(path)

    def _open(self, path: str, mode: str = "r", buffering: int = -1, **kwargs: Any) -> IO[Any]:
        self._check_kwargs(kwargs)
        if "w" in mode or "a" in mode:
            raise ValueError(f"{path}: URLs are read-only (mode {mode!r})")
        return open(cached_download(path), mode, buffering=buffering)


class ModelZooURLHandler(PathHandler):
    """``<prefix><name>`` -> the https URL ``to_url(name)``, fetched through ``path_manager``."""

    def __init__(
        self, path_manager: PathManager, prefix: str, to_url: Callable[[str], str]
    ) -> None:
        super().__init__()
        self.path_manager = path_manager
        self.prefix = prefix
        self.to_url = to_url

    def _get_supported_prefixes(self) -> list[str]:
        return [self.prefix]

    def _url(self, path: str) -> str:
        return self.to_url(path[len(self.prefix) :])

    def _get_local_path(self, path: str, force: bool = False, **kwargs: Any) -> str:
        return self.path_manager.get_local_path(self._url(path), force=force, **kwargs)

    def _open(self, path: str, mode: str = "r", buffering: int = -1, **kwargs: Any) -> IO[Any]:
        return self.path_manager.open(self._url(path), mode, buffering=buffering, **kwargs)


def detectron2_url(name: str) -> str:
    """``detectron2://<name>`` -> ``DETECTRON2_MODEL_ZOO + <name>``, as detectron2 resolves it."""
    return DETECTRON2_MODEL_ZOO + name


def open_mmlab_url(name: str) -> str:
    """``open-mmlab://<name>`` -> the URL of mmcv's model-zoo table (``OPEN_MMLAB_MODEL_ZOO``)."""
    if name not in OPEN_MMLAB_MODEL_ZOO:
        raise ValueError(
            f"open-mmlab://{name}: unknown name '{name}'; known: {sorted(OPEN_MMLAB_MODEL_ZOO)} "
            "(or give the file's https URL)"
        )
    return OPEN_MMLAB_MODEL_ZOO[name]


def register_url_handlers(path_manager: PathManager) -> PathManager:
    """Teach ``path_manager`` ``file://``, cached http(s), ``detectron2://`` and
    ``open-mmlab://``. Returns it."""
    path_manager.register_handler(FileURLHandler())
    path_manager.register_handler(CachedHTTPHandler())
    for prefix, to_url in (("detectron2://", detectron2_url), ("open-mmlab://", open_mmlab_url)):
        path_manager.register_handler(ModelZooURLHandler(path_manager, prefix, to_url))
    return path_manager


_PATH_MANAGER = register_url_handlers(PathManager())


def resolve_weights_path(path_or_url: str, *, setting: str = "MODEL.WEIGHTS") -> str:
    """The local file (or folder) behind a path or URL of weights (downloaded on first use).

    ``setting`` names the config key in the error raised when nothing is there.
    """
    try:
        local = _PATH_MANAGER.get_local_path(os.path.expanduser(path_or_url))
    except ConnectionError as err:
        raise ConnectionError(f"{setting}='{path_or_url}': {err}") from err
    if not os.path.exists(local):
        raise FileNotFoundError(f"{setting}='{path_or_url}': {local} not found")
    return local
