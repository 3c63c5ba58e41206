"""Write a file so that readers see either the old complete file or the new complete one."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import IO, Any

__all__ = ["atomic_write"]


def _fsync_dir(directory: str) -> None:
    """Persist a rename in ``directory`` (best effort: not every file system allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open ``path + ".tmp"`` for writing; on success flush, fsync and rename it over ``path``.

    If the block raises (or the process dies) ``path`` keeps its previous content; the temporary
    file is removed on an exception. Text modes use UTF-8.

    Example::

        with atomic_write("out/model_final.pth") as f:
            torch.save(state, f)
    """
    if "w" not in mode:
        raise ValueError(f"atomic_write needs a write mode ('w' or 'wb'), got {mode!r}")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp_path = f"{path}.tmp"
    encoding = None if "b" in mode else "utf-8"
    try:
        with open(tmp_path, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)
        raise
    _fsync_dir(directory)
