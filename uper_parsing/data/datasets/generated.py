"""Generated benchmark datasets in the label format, class counts and input size of a config.

``register_generated_datasets(cfg, root)`` makes a dataset that any config can be benchmarked on
without its real data: the family of ``MODEL.META_ARCHITECTURE`` picks the layout, the config's
heads give the class counts, and the images have the size of the recipe's dataset.

- ``SemanticSegmentor``: ADE20K layout, read as ADE20K is (``reduce_zero_label``)::

      images/<stem>.jpg
      annotations/<stem>.png       uint8, 0 = unlabelled, v = class v - 1 (K = NUM_CLASSES)

- ``PanopticFPN``: COCO panoptic layout, read by ``load_coco_panoptic_json``::

      images/<stem>.jpg
      panoptic/<stem>.png          RGB-encoded segment ids (R + 256 G + 256^2 B, 0 = void)
      panoptic_semseg/<stem>.png   Panoptic FPN semantic maps (0 = things, 1 + s = stuff s)
      panoptic.json                images, annotations (segments_info), categories

  with ``ROI_HEADS.NUM_CLASSES`` thing categories (ids 1..K_th) and
  ``SEM_SEG_HEAD.NUM_CLASSES - 1`` stuff categories (ids K_th + 1..K_th + K_st).

Scenes are piecewise constant: weighted Voronoi cells (stuff) under random ellipses and polygons of
log-uniform sizes (objects), each region of a random class. A region's colour is its class colour
with a small shift, a striped texture and mild noise, so JPEG decoding costs about what it costs
on photos (neither flat colour nor pure noise). Image ``i`` depends on the seed and ``i`` only.

Each set lives in ``<root>/<family>_<class counts>_<H>x<W>_n<count>_seed<seed>_v<version>``,
written into a temporary folder and renamed into place, and re-used when it exists.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..catalog import DatasetCatalog, MetadataCatalog
from ..panoptic_utils import id2rgb, panoptic_semantic
from .coco_panoptic import register_coco_panoptic
from .sem_seg import distinct_colors, register_sem_seg

__all__ = ["register_generated_datasets", "GENERATOR_VERSION"]

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1  # part of the folder name: bump when the content changes
_META_FILE = "meta.json"
_JPEG_QUALITY = 90
_MIN_SIDE = 32
_VOID_FRACTION = 0.05  # share of background cells left unlabelled (ADE and COCO both have some)
_CROWD_FRACTION = 0.02  # share of thing segments marked iscrowd
_MAX_WORKERS = 4
_IMAGES_PER_WORKER = 16  # fewer images per worker than this are written in this process


@dataclass(frozen=True)
class _SetSpec:
    """What a generated set holds; equal specs give byte-identical sets."""

    family: str
    num_things: int
    num_stuff: int
    height: int
    width: int
    num_images: int
    seed: int

    @property
    def folder_name(self) -> str:
        counts = (
            f"th{self.num_things}_st{self.num_stuff}" if self.num_things else f"k{self.num_stuff}"
        )
        return (
            f"{self.family}_{counts}_{self.height}x{self.width}_n{self.num_images}"
            f"_seed{self.seed}_v{GENERATOR_VERSION}"
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "generator_version": GENERATOR_VERSION}


# ----------------------------------------------------------------------------- scene content


def _rng(spec: _SetSpec, index: int) -> np.random.Generator:
    return np.random.default_rng([spec.seed, index])


def _voronoi(rng: np.random.Generator, hw: tuple[int, int], num_cells: int) -> np.ndarray:
    """(H, W) int32 cell index of a multiplicatively weighted Voronoi diagram (curved borders,
    cells of varied size) with ``num_cells`` random seeds."""
    h, w = hw
    ys, xs = rng.uniform(0, h, num_cells), rng.uniform(0, w, num_cells)
    weights = rng.uniform(0.5, 2.0, num_cells)
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    best = np.full(hw, np.inf, np.float32)
    cells = np.zeros(hw, np.int32)
    for k in range(num_cells):
        dist = ((yy - ys[k]) ** 2 + (xx - xs[k]) ** 2) * weights[k]
        closer = dist < best
        best[closer] = dist[closer]
        cells[closer] = k
    return cells


def _draw_shape(rng: np.random.Generator, canvas: np.ndarray, value: int, size: float) -> None:
    """Paint an ellipse or a star-shaped polygon of about ``size`` px across, at a random place,
    with ``value`` into the (H, W) int32 ``canvas``."""
    h, w = canvas.shape
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    radius = size / 2
    if rng.random() < 0.5:
        axes = (max(1, round(radius)), max(1, round(radius * rng.uniform(0.3, 1.0))))
        angle = rng.uniform(0, 180)
        cv2.ellipse(canvas, (round(cx), round(cy)), axes, angle, 0, 360, int(value), -1)
        return
    num = int(rng.integers(5, 11))
    angles = np.sort(rng.uniform(0, 2 * math.pi, num))
    radii = radius * rng.uniform(0.45, 1.0, num)
    pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
    cv2.fillPoly(canvas, [np.round(pts).astype(np.int32)], int(value))


def _shape_sizes(rng: np.random.Generator, hw: tuple[int, int], num: int) -> np.ndarray:
    """(num,) log-uniform object sizes between 4 % and 60 % of the short side (at least 4 px):
    many small objects and a few large ones, as in COCO and ADE20K."""
    short = min(hw)
    low, high = max(4.0, 0.04 * short), 0.6 * short
    return np.exp(rng.uniform(math.log(low), math.log(high), num))


def _layout(
    rng: np.random.Generator, hw: tuple[int, int], num_cells: int, num_shapes: int
) -> np.ndarray:
    """(H, W) int32 region index: ``0..num_cells-1`` background cells, then ``num_cells + j`` for
    shape ``j`` (later shapes occlude earlier ones; a shape may end up hidden)."""
    regions = _voronoi(rng, hw, num_cells)
    for j, size in enumerate(_shape_sizes(rng, hw, num_shapes)):
        _draw_shape(rng, regions, num_cells + j, size)
    return regions


def _render(rng: np.random.Generator, regions: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB image of a region map.

    Args:
        regions: (H, W) int region index. colors: (R, 3) float RGB base colour of each region.
    """
    h, w = regions.shape
    num = len(colors)
    base = colors + rng.normal(0, 12, (num, 3))
    freq = rng.uniform(0.03, 0.3, num)
    angle = rng.uniform(0, math.pi, num)
    fx, fy = (freq * np.cos(angle)).astype(np.float32), (freq * np.sin(angle)).astype(np.float32)
    phase = rng.uniform(0, 2 * math.pi, num).astype(np.float32)
    amplitude = rng.uniform(4, 18, num).astype(np.float32)
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    stripes = amplitude[regions] * np.sin(fx[regions] * xx + fy[regions] * yy + phase[regions])
    light = 1 + 0.2 * (rng.uniform(-1, 1) * xx / w + rng.uniform(-1, 1) * yy / h)
    image = base.astype(np.float32)[regions] * light[..., None] + stripes[..., None]
    image += 3 * rng.standard_normal((h, w, 3), dtype=np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY]):
        raise OSError(f"Could not write {path}")


def _write_png(path: Path, array: np.ndarray) -> None:
    if not cv2.imwrite(str(path), array):
        raise OSError(f"Could not write {path}")


def _stem(index: int) -> str:
    return f"generated_{index:06d}"


def _class_palette(num: int) -> np.ndarray:
    """(num, 3) float RGB colours, one per class."""
    return np.array(distinct_colors(num), np.float64)


# ----------------------------------------------------------------------------- ADE20K layout


def _ade_class_counts(cfg: Any) -> tuple[int, int]:
    num = int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
    if not 1 <= num <= 254:
        raise ValueError(
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES is {num}; the ADE20K layout stores class v - 1 as v "
            "in 8-bit PNGs, where 0 and 255 are read as the ignore label, so it must be in 1..254"
        )
    return 0, num


def _write_ade_image(spec: _SetSpec, folder: Path, index: int) -> None:
    """Write ``images/<stem>.jpg`` and ``annotations/<stem>.png`` (stored 0 = unlabelled,
    v = class v - 1) of image ``index``."""
    rng = _rng(spec, index)
    hw = (spec.height, spec.width)
    num_cells, num_shapes = int(rng.integers(8, 25)), int(rng.integers(4, 17))
    regions = _layout(rng, hw, num_cells, num_shapes)
    stored = rng.integers(1, spec.num_stuff + 1, num_cells + num_shapes)
    stored[:num_cells][rng.random(num_cells) < _VOID_FRACTION] = 0
    palette = np.vstack([rng.uniform(0, 255, (1, 3)), _class_palette(spec.num_stuff)])
    _write_jpeg(folder / "images" / f"{_stem(index)}.jpg", _render(rng, regions, palette[stored]))
    _write_png(folder / "annotations" / f"{_stem(index)}.png", stored.astype(np.uint8)[regions])


def _finish_ade(spec: _SetSpec, folder: Path, results: list[None]) -> None:
    """Nothing to write: the ADE layout has no index file."""


def _register_ade(name: str, spec: _SetSpec, folder: Path) -> None:
    register_sem_seg(
        name,
        image_root=folder / "images",
        label_root=folder / "annotations",
        metadata={
            "stuff_classes": [f"class_{i}" for i in range(spec.num_stuff)],
            "stuff_colors": distinct_colors(spec.num_stuff),
            "ignore_label": 255,
            "reduce_zero_label": True,
        },
    )


# ----------------------------------------------------------------------------- COCO panoptic


def _panoptic_class_counts(cfg: Any) -> tuple[int, int]:
    """(K_th, K_st) = (ROI_HEADS.NUM_CLASSES, SEM_SEG_HEAD.NUM_CLASSES - 1): the semantic branch
    predicts "things" + the stuff classes."""
    things = int(cfg.MODEL.ROI_HEADS.NUM_CLASSES)
    stuff = int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES) - 1
    if things < 1:
        raise ValueError(f"MODEL.ROI_HEADS.NUM_CLASSES is {things}; at least 1 thing class")
    if not 1 <= stuff <= 254:
        raise ValueError(
            f'MODEL.SEM_SEG_HEAD.NUM_CLASSES is {stuff + 1} ("things" + {stuff} stuff); the '
            "Panoptic FPN semantic maps are uint8 with 255 = ignore, so it must be in 2..255"
        )
    return things, stuff


def _panoptic_categories(spec: _SetSpec) -> list[dict[str, Any]]:
    """Things with ids 1..K_th, then stuff with ids K_th + 1..K_th + K_st."""
    colors = distinct_colors(spec.num_things + spec.num_stuff)
    names = [f"thing_{i}" for i in range(spec.num_things)]
    names += [f"stuff_{i}" for i in range(spec.num_stuff)]
    return [
        {"id": i + 1, "name": n, "isthing": int(i < spec.num_things), "color": list(c)}
        for i, (n, c) in enumerate(zip(names, colors))
    ]


def _bbox(mask: np.ndarray) -> list[int]:
    """Tight XYWH box (integer pixels) of a non-empty (H, W) bool mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


def _panoptic_segments(
    rng: np.random.Generator, spec: _SetSpec, regions: np.ndarray, num_cells: int, num_shapes: int
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Categories and segments of a layout.

    Background cells take random stuff categories (``_VOID_FRACTION`` of them void), shapes
    random thing categories (``_CROWD_FRACTION`` of them crowd). Each stuff category present is
    one segment, each visible shape another; segment ids count from 1.

    Returns:
        region_category: (R,) int64 dataset category id of each region (0 = void).
        ids: (H, W) int64 segment ids (0 = void).
        segments_info: ``[{"id", "category_id" (dataset id), "iscrowd", "area", "bbox" XYWH}]``.
    """
    stuff = spec.num_things + 1 + rng.integers(0, spec.num_stuff, num_cells)
    stuff[rng.random(num_cells) < _VOID_FRACTION] = 0
    things = 1 + rng.integers(0, spec.num_things, num_shapes)
    crowd = rng.random(num_shapes) < _CROWD_FRACTION
    visible = np.bincount(regions.ravel(), minlength=num_cells + num_shapes) > 0
    segment_of_region = np.zeros(num_cells + num_shapes, np.int64)
    segments: list[dict[str, Any]] = []
    for cat in np.unique(stuff[visible[:num_cells] & (stuff > 0)]):
        segment_of_region[:num_cells][stuff == cat] = len(segments) + 1
        segments.append({"id": len(segments) + 1, "category_id": int(cat), "iscrowd": 0})
    for j in np.flatnonzero(visible[num_cells:]):
        segment_of_region[num_cells + j] = len(segments) + 1
        segments.append(
            {"id": len(segments) + 1, "category_id": int(things[j]), "iscrowd": int(crowd[j])}
        )
    ids = segment_of_region[regions]
    for seg in segments:
        mask = ids == seg["id"]
        seg.update(area=int(mask.sum()), bbox=_bbox(mask))
    return np.concatenate([stuff, things]), ids, segments


def _contiguous(segments: list[dict[str, Any]], num_things: int) -> list[dict[str, Any]]:
    """Segments with ``isthing`` and contiguous category ids, as in dataset dicts."""
    out = []
    for seg in segments:
        isthing = seg["category_id"] <= num_things
        first = 1 if isthing else 1 + num_things
        out.append({**seg, "isthing": isthing, "category_id": seg["category_id"] - first})
    return out


def _write_panoptic_image(spec: _SetSpec, folder: Path, index: int) -> dict[str, Any]:
    """Write the JPEG, panoptic PNG and semantic PNG of image ``index``; return its JSON
    ``image`` and ``annotation`` entries."""
    rng = _rng(spec, index)
    hw = (spec.height, spec.width)
    num_cells, num_shapes = int(rng.integers(4, 13)), int(rng.integers(5, 16))
    regions = _layout(rng, hw, num_cells, num_shapes)
    category, ids, segments = _panoptic_segments(rng, spec, regions, num_cells, num_shapes)
    palette = np.vstack(
        [rng.uniform(0, 255, (1, 3)), _class_palette(spec.num_things + spec.num_stuff)]
    )
    stem = _stem(index)
    _write_jpeg(folder / "images" / f"{stem}.jpg", _render(rng, regions, palette[category]))
    _write_png(folder / "panoptic" / f"{stem}.png", cv2.cvtColor(id2rgb(ids), cv2.COLOR_RGB2BGR))
    semantic = panoptic_semantic(ids, _contiguous(segments, spec.num_things))
    _write_png(folder / "panoptic_semseg" / f"{stem}.png", semantic)
    return {
        "image": {"id": index + 1, "file_name": f"{stem}.jpg", "height": hw[0], "width": hw[1]},
        "annotation": {
            "image_id": index + 1,
            "file_name": f"{stem}.png",
            "segments_info": segments,
        },
    }


def _finish_panoptic(spec: _SetSpec, folder: Path, results: list[dict[str, Any]]) -> None:
    data = {
        "images": [r["image"] for r in results],
        "annotations": [r["annotation"] for r in results],
        "categories": _panoptic_categories(spec),
    }
    with open(folder / "panoptic.json", "w") as f:
        json.dump(data, f)


def _register_panoptic(name: str, spec: _SetSpec, folder: Path) -> None:
    register_coco_panoptic(
        name,
        {"categories": _panoptic_categories(spec)},
        image_root=str(folder / "images"),
        panoptic_root=str(folder / "panoptic"),
        panoptic_json=str(folder / "panoptic.json"),
        sem_seg_root=str(folder / "panoptic_semseg"),
    )


# ----------------------------------------------------------------------------- families


@dataclass(frozen=True)
class _Family:
    """How one task family's set is sized, written and registered."""

    name: str  # first part of the folder name
    default_size: tuple[int, int]  # (H, W) typical of the recipe's dataset
    class_counts: Callable[[Any], tuple[int, int]]  # cfg -> (things, stuff or classes)
    subdirs: tuple[str, ...]
    write_image: Callable[[_SetSpec, Path, int], Any]
    finish: Callable[[_SetSpec, Path, list], None]
    register: Callable[[str, _SetSpec, Path], None]


_FAMILIES: dict[str, _Family] = {
    "SemanticSegmentor": _Family(
        name="ade20k",
        default_size=(512, 683),
        class_counts=_ade_class_counts,
        subdirs=("images", "annotations"),
        write_image=_write_ade_image,
        finish=_finish_ade,
        register=_register_ade,
    ),
    "PanopticFPN": _Family(
        name="coco_panoptic",
        default_size=(480, 640),
        class_counts=_panoptic_class_counts,
        subdirs=("images", "panoptic", "panoptic_semseg"),
        write_image=_write_panoptic_image,
        finish=_finish_panoptic,
        register=_register_panoptic,
    ),
}


# ----------------------------------------------------------------------------- generation


def _num_workers(num_images: int) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(_MAX_WORKERS, cpus or 1, num_images // _IMAGES_PER_WORKER)


def _map_images(write: Callable[[int], Any], num_images: int) -> list[Any]:
    """``[write(i) for i in range(num_images)]``, on a small fork pool for larger sets."""
    workers = _num_workers(num_images)
    if workers <= 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [write(i) for i in range(num_images)]
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        return list(pool.map(write, range(num_images), chunksize=4))


def _generate(folder: Path, spec: _SetSpec, family: _Family) -> None:
    """Write every image of ``spec`` into ``folder``, then ``meta.json`` (the completion mark)."""
    for sub in family.subdirs:
        (folder / sub).mkdir(parents=True, exist_ok=True)
    results = _map_images(partial(family.write_image, spec, folder), spec.num_images)
    family.finish(spec, folder, results)
    with open(folder / _META_FILE, "w") as f:
        json.dump(spec.to_json(), f, indent=2)


def _is_complete(folder: Path, spec: _SetSpec) -> bool:
    try:
        with open(folder / _META_FILE) as f:
            return json.load(f) == spec.to_json()
    except (OSError, ValueError):
        return False


def _prepare(root: Path, spec: _SetSpec, family: _Family) -> Path:
    """The folder of ``spec`` under ``root``, generated when absent (into a temporary folder that
    is renamed into place, so a reader never sees a partial set; of two processes generating it
    at once, the first rename wins and the other's copy is discarded)."""
    folder = root / spec.folder_name
    if not folder.exists():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=root))
        try:
            start = time.perf_counter()
            _generate(tmp, spec, family)
            tmp.chmod(0o755)  # mkdtemp makes it private
            try:
                os.rename(tmp, folder)
            except OSError:
                if not folder.exists():
                    raise  # not a lost race: report it
            logger.info("Generated %s in %.1f s", folder, time.perf_counter() - start)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if not _is_complete(folder, spec):
        raise FileExistsError(
            f"{folder} exists but is not a complete generated set of these parameters (its "
            f"{_META_FILE} is missing or differs); remove it to have it generated again"
        )
    return folder


# ----------------------------------------------------------------------------- registration


def _register_once(name: str, spec: _SetSpec, folder: Path, family: _Family) -> None:
    """Register ``name`` for ``folder``; a name already registered for it is kept."""
    image_root = str(folder / "images")
    if name in DatasetCatalog:
        registered = MetadataCatalog.get(name).get("image_root")
        if registered != image_root:
            raise ValueError(
                f"Dataset '{name}' is already registered with image_root {registered}, not "
                f"{image_root}; generate into one root per process, or remove '{name}' from "
                "DatasetCatalog and MetadataCatalog first"
            )
        return
    family.register(name, spec, folder)


def _check_request(num_images: int, image_size: tuple[int, int], seed: int) -> None:
    if num_images < 1:
        raise ValueError(f"num_images must be at least 1, got {num_images}")
    if len(image_size) != 2 or min(image_size) < _MIN_SIDE:
        raise ValueError(f"image_size must be (H, W), each >= {_MIN_SIDE} px, got {image_size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")


def register_generated_datasets(
    cfg: Any,
    root: str | os.PathLike,
    *,
    num_images: int = 64,
    image_size: tuple[int, int] | None = None,
    seed: int = 0,
) -> tuple[str, str]:
    """Generate (once) and register a benchmark dataset in the format of ``cfg``'s task family.

    Args:
        cfg: a config, frozen or not (only read). ``MODEL.META_ARCHITECTURE`` picks the family
            (see the module docstring); the class counts are the config's:
            ``SEM_SEG_HEAD.NUM_CLASSES`` classes for ``SemanticSegmentor``,
            ``ROI_HEADS.NUM_CLASSES`` things and ``SEM_SEG_HEAD.NUM_CLASSES - 1`` stuff for
            ``PanopticFPN``, so the mappers' class-count checks pass.
        root: folder of generated sets; each set is one sub-folder
            ``<family>_<k<K> | th<K_th>_st<K_st>>_<H>x<W>_n<num_images>_seed<seed>_v<version>``.
        num_images: images in the set.
        image_size: (H, W) of every image; default the family's typical size: 512 x 683
            (ADE20K) for ``SemanticSegmentor``, 480 x 640 (COCO) for ``PanopticFPN``.
        seed: the set depends on it and on the other arguments only.

    Returns:
        (train name, test name) = ``generated_<folder>_train`` / ``generated_<folder>_test``,
        registered in ``DatasetCatalog`` and ``MetadataCatalog`` through ``register_sem_seg``
        (ADE-style metadata) or ``register_coco_panoptic``. Both name the same images: a
        benchmark measures speed, not generalisation. Set them as ``DATASETS.TRAIN`` /
        ``DATASETS.TEST``.

    Raises:
        ValueError: an unsupported meta-architecture (the message lists the supported ones), class
            counts the format cannot store, bad ``num_images`` / ``image_size`` / ``seed``, or a
            name already registered for a set under another root.
        FileExistsError: the set's folder exists without a complete set of these parameters.
    """
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch not in _FAMILIES:
        raise ValueError(
            f"Cannot generate a benchmark dataset for MODEL.META_ARCHITECTURE '{arch}'; "
            f"supported: {', '.join(sorted(_FAMILIES))}"
        )
    family = _FAMILIES[arch]
    height, width = image_size or family.default_size
    _check_request(num_images, (height, width), seed)
    things, stuff = family.class_counts(cfg)
    spec = _SetSpec(family.name, things, stuff, int(height), int(width), num_images, seed)
    folder = _prepare(Path(root).resolve(), spec, family)
    names = (f"generated_{folder.name}_train", f"generated_{folder.name}_test")
    for name in names:
        _register_once(name, spec, folder, family)
    return names
