"""Weights by URL: fetched once into a cache folder, written atomically, checked by checksum.

``cached_download(url)`` returns the local path of ``url`` (http or https) under
:func:`cache_dir`; the first call downloads it with a progress bar, later calls (and later runs)
read the cached file. A file name that carries a hash in torch.hub's style (``name-<hex>.ext``, at
least 8 hex digits: the start of the file's SHA-256, as open-mmlab, torchvision and timm publish
them) is verified after the download; a mismatch deletes the file and raises.

With several processes, one process per machine (local rank 0) downloads while the others wait at
a barrier; a file lock keeps two machines that share the cache folder from writing it at once.
Nothing here runs at import: a download happens only for a URL that was configured.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import re
import urllib.error
import urllib.request
from urllib.parse import unquote, urlparse

from iopath.common.file_io import file_lock
from tqdm import tqdm

from ..utils import comm
from .atomic import atomic_write

__all__ = ["cache_dir", "cache_path", "cached_download", "expected_sha256_prefix"]

logger = logging.getLogger(__name__)

CACHE_ENV = "UPER_PARSING_CACHE"  # overrides the cache folder
# torch.hub's convention: "<name>-<first hex digits of the SHA-256>.<ext>"; at least 8 digits so
# that names such as "R-50.pkl" are not taken for a hash
_HASH_IN_NAME = re.compile(r"-(?P<hash>[0-9a-f]{8,64})\.[^.-]+$")
_CHUNK = 1 << 20
_TIMEOUT_S = 60


def cache_dir() -> str:
    """``$UPER_PARSING_CACHE``, else ``$XDG_CACHE_HOME/uper_parsing``, else
    ``~/.cache/uper_parsing``."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return os.path.expanduser(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "uper_parsing")


def cache_path(url: str, root: str | None = None) -> str:
    """Where ``url`` is cached: ``<root>/<host>/<path of the URL>``. A query string does not
    change the file name (``.../model.safetensors?download=true`` stays ``model.safetensors``)
    but gets a folder of its own (first 8 hex digits of its SHA-256), since it may select
    another file."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"{url}: only http(s) URLs are downloaded")
    path = unquote(parsed.path)
    parts = [p for p in path.split("/") if p]
    if not parts or path.endswith("/") or any(p in (".", "..") for p in parts):
        raise ValueError(f"{url}: the URL names no file (or has '.' / '..' in its path)")
    if parsed.query:
        parts.insert(-1, hashlib.sha256(parsed.query.encode()).hexdigest()[:8])
    host = parsed.netloc.replace(":", "_")
    return os.path.join(root or cache_dir(), host, *parts)


def expected_sha256_prefix(url: str) -> str | None:
    """The SHA-256 prefix the file name of ``url`` publishes (``resnet50_v1c-2cccc1ad.pth`` ->
    ``"2cccc1ad"``), or None."""
    name = posixpath.basename(unquote(urlparse(url).path))
    match = _HASH_IN_NAME.search(name)
    return match["hash"] if match else None


def cached_download(url: str, *, root: str | None = None, progress: bool = True) -> str:
    """Local path of ``url``, downloaded into the cache unless it is there already.

    Every process of a job must call this (it synchronises them when a process group exists).
    Raises:
        ValueError when the download does not match the checksum in its name (naming the URL,
        the expected and the actual hash); the file is not kept.
        FileNotFoundError when the file is missing after the download step.
    """
    path = cache_path(url, root)
    if comm.get_local_rank() == 0:
        with file_lock(path):
            if not os.path.isfile(path):
                _download(url, path, progress=progress)
    comm.synchronize()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{url} was not downloaded to {path} (see the first process)")
    return path


def _download(url: str, path: str, *, progress: bool) -> None:
    """Stream ``url`` into ``path`` atomically, hashing it; check the hash in its name."""
    expected = expected_sha256_prefix(url)
    logger.info("Downloading %s to %s", url, path)
    request = urllib.request.Request(url, headers={"User-Agent": "uper_parsing"})
    sha256 = hashlib.sha256()
    try:
        response = urllib.request.urlopen(request, timeout=_TIMEOUT_S)
    except (urllib.error.URLError, TimeoutError) as err:
        raise ConnectionError(
            f"Could not download {url} ({getattr(err, 'reason', err)}). Without a network, fetch "
            f"it elsewhere and put it at {path} (the cache), or give its local path instead"
        ) from err
    with response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with (
            atomic_write(path, "wb") as out,
            tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=os.path.basename(path),
                disable=not progress,
            ) as bar,
        ):
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                sha256.update(chunk)
                bar.update(len(chunk))
            actual = sha256.hexdigest()
            if expected is not None and not actual.startswith(expected):
                raise ValueError(
                    f"{url}: SHA-256 mismatch, the file name says {expected}..., the download "
                    f"is {actual}; the file was not kept"
                )
