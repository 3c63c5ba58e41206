"""The checkpoints a ``save_dir`` holds, in order, and whether each can be resumed from."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from .detectron2 import load_torch_file

__all__ = ["checkpoint_problem", "file_signature", "periodic_checkpoint_files", "resume_candidates"]

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes zip archives


def periodic_checkpoint_files(save_dir: str, prefix: str = "model") -> list[str]:
    """Paths of ``save_dir/<prefix>_<iteration>.pth``, oldest iteration first."""
    pattern = re.compile(rf"{re.escape(prefix)}_(\d+)\.pth")
    found = []
    for name in os.listdir(save_dir) if os.path.isdir(save_dir) else []:
        match = pattern.fullmatch(name)
        if match:
            found.append((int(match.group(1)), os.path.join(save_dir, name)))
    return [path for _, path in sorted(found)]


def resume_candidates(save_dir: str, prefix: str = "model") -> list[str]:
    """Checkpoints of ``save_dir``, newest first: ``<prefix>_final.pth`` (when there is one),
    then ``<prefix>_<iteration>.pth`` by iteration."""
    final = os.path.join(save_dir, f"{prefix}_final.pth")
    periodic = periodic_checkpoint_files(save_dir, prefix)[::-1]
    return [final, *periodic] if os.path.isfile(final) else periodic


def file_signature(path: str) -> tuple[int, int] | None:
    """(size, modification time in ns) of ``path``; None when it does not exist."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def checkpoint_problem(path: str) -> str | None:
    """What keeps ``path`` from being resumed from, as words to follow "it"; None for a good
    checkpoint: a torch.save archive that reads safely (tensors memory-mapped on the CPU, plain
    containers only) into a dict with a "model" entry."""
    if not os.path.exists(path):
        return "does not exist"
    if not os.path.isfile(path):
        return "is not a file"
    with open(path, "rb") as f:
        head = f.read(len(_ZIP_MAGIC))
    if not head:
        return "is empty"
    if head != _ZIP_MAGIC:
        return "cannot be read: not a torch.save archive (corrupt?)"
    try:
        data = load_torch_file(path, mmap=True)
    except Exception as e:  # whatever the reader fails on, the file cannot be resumed from
        return f"cannot be read, truncated or corrupt ({_first_sentence(e)})"
    if not isinstance(data, Mapping) or not isinstance(data.get("model"), Mapping):
        keys = sorted(map(str, data))[:10] if isinstance(data, Mapping) else type(data).__name__
        return f"holds no 'model' entry (top level: {keys})"
    return None


def _first_sentence(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text.split(". ")[0][:200]
