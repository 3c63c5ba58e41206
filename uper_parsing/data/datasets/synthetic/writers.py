"""Writers turn ``SceneRecord``s into dataset files; the renderer knows nothing about formats.

``AdeSceneWriter`` writes the ADE20K layout (JPEG images, PNG class maps with 0 = unlabelled).
``BrodenSceneWriter`` (``broden_writer.py``) writes the Broden-style multi-task layout and
``CocoPanopticSceneWriter`` (``coco_panoptic_writer.py``) the COCO panoptic layout (from the
``object``, ``instance`` and ``instances`` of a record). Each registers itself in
``SCENE_WRITERS``; the renderer does not change.
"""

from __future__ import annotations

import abc
from pathlib import Path

import cv2
import numpy as np

from .record import SceneRecord

__all__ = ["SceneWriter", "AdeSceneWriter", "SCENE_WRITERS", "ADE_SPLIT_DIRS"]

ADE_SPLIT_DIRS = {"train": "training", "val": "validation"}


class SceneWriter(abc.ABC):
    """Writes the records of each split under ``root``.

    ``write`` is called once per record (in index order) and ``finish`` once per split, so that
    formats with one file per split (COCO JSON, Broden CSV) can be written at the end.
    """

    def __init__(self, root: str | Path, *, jpeg_quality: int = 92, seed: int = 0) -> None:
        self.root = Path(root)
        self.jpeg_quality = jpeg_quality
        self.seed = seed  # seed of the set, for writers that draw extra content (texture crops)

    @abc.abstractmethod
    def write(self, record: SceneRecord, split: str, stem: str) -> None:
        """Write one record of ``split`` ("train" / "val") under the file stem ``stem``."""

    def finish(self, split: str) -> None:  # noqa: B027 - optional hook
        """Called after the last record of ``split``."""

    def _write_jpeg(self, path: Path, record: SceneRecord | np.ndarray) -> None:
        """Write ``record.image`` (or an (H, W, 3) RGB array) as JPEG."""
        path.parent.mkdir(parents=True, exist_ok=True)
        image = record if isinstance(record, np.ndarray) else record.image
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality]):
            raise OSError(f"Could not write {path}")


class AdeSceneWriter(SceneWriter):
    """``images/{training,validation}/<stem>.jpg`` + ``annotations/.../<stem>.png`` (uint8 class
    ids, 0 = unlabelled, ``i + 1`` = class ``i``: read with ``reduce_zero_label``)."""

    def write(self, record: SceneRecord, split: str, stem: str) -> None:
        sub = ADE_SPLIT_DIRS[split]
        self._write_jpeg(self.root / "images" / sub / f"{stem}.jpg", record)
        label_path = self.root / "annotations" / sub / f"{stem}.png"
        label_path.parent.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(label_path), record.object):
            raise OSError(f"Could not write {label_path}")


SCENE_WRITERS: dict[str, type[SceneWriter]] = {"ade": AdeSceneWriter}
