"""Dataset checks: every file of a registered dataset, read as training reads it, before training.

``check_dataset(name)`` runs the checks of the dataset's family (``metadata.evaluator_type``, see
``DATASET_CHECKS``) and returns every fault as a :class:`Problem` (file, field, value, expected),
where the readers stop at the first:

- annotation files (``DatasetFamily.files``, ``files.py``): the panoptic JSON or the Broden CSV
  files missing, empty or malformed, an image id listed twice, Broden numbers of no class table;
- the dataset loads (``DatasetCatalog.get``) and its dicts have distinct ``image_id``;
- each dataset dict (``DatasetFamily.item``, ``items.py``, on a thread pool): image missing,
  undecodable or truncated, image / label sizes differing, label values outside the classes and
  not the ignore label, panoptic segment ids in the PNG but not in the JSON or the reverse,
  Broden label numbers of no class table.

``tools/check_dataset.py`` runs it from the command line; ``check_on_start(cfg)`` before training
(``DATASETS.CHECK_ON_START``).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...utils import comm
from ..catalog import DatasetCatalog, MetadataCatalog
from .files import broden_file_problems, panoptic_json_problems
from .items import (
    check_image,
    check_images_only,
    check_multitask_item,
    check_panoptic_item,
    check_sem_seg_item,
)
from .problem import Problem

__all__ = [
    "DATASET_CHECKS",
    "CheckReport",
    "DatasetCheckError",
    "DatasetFamily",
    "Problem",
    "check_dataset",
    "check_image",
    "check_on_start",
    "sample_indices",
]

logger = logging.getLogger(__name__)

ItemCheck = Callable[[Mapping[str, Any], Any], list[Problem]]
_SHOWN = 10  # problems a CHECK_ON_START error lists


class DatasetCheckError(ValueError):
    """``DATASETS.CHECK_ON_START`` found problems in the datasets of the config."""


def _no_files(metadata: Any) -> list[Problem]:
    return []


@dataclass(frozen=True)
class DatasetFamily:
    """The checks of one kind of dataset: ``item(dataset_dict, metadata)`` checks the files of
    one dataset dict, ``files(metadata)`` the annotation files (JSON, CSV) of the dataset."""

    item: ItemCheck
    files: Callable[[Any], list[Problem]] = _no_files


# how each family (metadata.evaluator_type) is checked; other families: their images only
DATASET_CHECKS: dict[str, DatasetFamily] = {
    "sem_seg": DatasetFamily(check_sem_seg_item),
    "coco_panoptic_seg": DatasetFamily(check_panoptic_item, panoptic_json_problems),
    "multitask": DatasetFamily(check_multitask_item, broden_file_problems),
}


@dataclass
class CheckReport:
    """What ``check_dataset`` found: ``problems``, over ``checked`` of the dataset's ``total``
    dicts."""

    dataset: str
    checked: int = 0
    total: int = 0
    problems: list[Problem] = field(default_factory=list)


def sample_indices(total: int, num: int, seed: int = 0) -> list[int]:
    """The indices of the dicts to check, sorted: all when ``num`` is negative or at least
    ``total``, else ``num`` drawn without replacement by a generator seeded with ``seed`` (the
    same images on every run)."""
    if num < 0 or num >= total:
        return list(range(total))
    chosen = np.random.default_rng(seed).choice(total, size=num, replace=False)
    return sorted(int(i) for i in chosen)


def _duplicate_ids(dicts: Sequence[Mapping[str, Any]]) -> list[Problem]:
    """A problem for each dict whose ``image_id`` an earlier dict has."""
    first: dict[Any, str] = {}
    problems = []
    for d in dicts:
        image_id, path = d.get("image_id"), os.fspath(d.get("file_name", "?"))
        if image_id is None:
            continue
        if image_id in first:
            value = f"{image_id!r}, also the id of {first[image_id]}"
            problems.append(Problem(path, "image_id", value, "unique image ids"))
        else:
            first[image_id] = path
    return problems


def _checked_item(check: ItemCheck, metadata: Any, d: Mapping[str, Any]) -> list[Problem]:
    """``check(d, metadata)``; a check that fails unexpectedly is itself a problem of the dict."""
    try:
        return check(d, metadata)
    except Exception as err:  # a dict the readers cannot be called on: report it, go on
        value = f"{type(err).__name__}: {err}"
        path = os.fspath(d.get("file_name", "?"))
        return [Problem(path, "dataset dict", value, "a dict of the dataset's family")]


def _file_problems(family: DatasetFamily, name: str, metadata: Any) -> list[Problem]:
    try:
        return family.files(metadata)
    except Exception as err:  # e.g. a lazy metadata path that cannot be resolved
        value = f"cannot be checked ({type(err).__name__}: {err})"
        return [Problem(name, "annotation files", value, "readable metadata paths")]


def _run(fn: Callable[[Any], Any], items: Sequence[Any], workers: int, bar: str | None) -> list:
    """``[fn(x) for x in items]`` on ``workers`` threads, with a tqdm progress bar titled
    ``bar`` on stderr (None: no bar)."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(fn, items)
        if bar is not None:
            from tqdm import tqdm

            results = tqdm(results, total=len(items), desc=bar, unit="img", file=sys.stderr)
        return list(results)


def check_dataset(
    name: str, *, num_images: int = -1, workers: int = 1, progress: bool = False, seed: int = 0
) -> CheckReport:
    """Check the registered dataset ``name`` (see the module docstring).

    Args:
        num_images: dataset dicts whose files are checked: -1 = all, N = the N of
            ``sample_indices(total, N, seed)``. Annotation files are always checked whole.
        workers: threads reading files.
        progress: show a progress bar on stderr.

    Returns:
        The problems, annotation files first, then in dataset order.
    """
    metadata = MetadataCatalog.get(name)
    family = DATASET_CHECKS.get(
        metadata.get("evaluator_type", "sem_seg"), DatasetFamily(check_images_only)
    )
    report = CheckReport(name)
    try:
        dicts = DatasetCatalog.get(name)
    except Exception as err:  # the loader stops at its first error: report it with the rest
        value = f"cannot be loaded ({type(err).__name__}: {err})"
        report.problems += _file_problems(family, name, metadata)
        report.problems.append(Problem(name, "dataset", value, "loadable (no image was checked)"))
        return report
    report.problems += _file_problems(family, name, metadata) + _duplicate_ids(dicts)
    chosen = [dicts[i] for i in sample_indices(len(dicts), num_images, seed)]
    check = functools.partial(_checked_item, family.item, metadata)
    for found in _run(check, chosen, workers, name if progress else None):
        report.problems += found
    report.checked, report.total = len(chosen), len(dicts)
    return report


def _start_error(reports: Sequence[CheckReport], num_images: int) -> DatasetCheckError:
    problems = [p for r in reports for p in r.problems]
    datasets = [r.dataset for r in reports if r.problems]
    lines = "\n  ".join(str(p) for p in problems[:_SHOWN])
    more = f"\n  ... and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
    return DatasetCheckError(
        f"DATASETS.CHECK_ON_START {num_images} found {len(problems)} problem(s) in "
        f"{', '.join(datasets)}:\n  {lines}{more}\nList them all with tools/check_dataset.py "
        "--config-file <config>; DATALOADER.SKIP_BAD_SAMPLES True trains without unreadable "
        "samples; DATASETS.CHECK_ON_START 0 turns this check off"
    )


def check_on_start(cfg: Any) -> None:
    """Check ``DATASETS.CHECK_ON_START`` dicts (-1: all; 0: nothing) of each dataset of
    ``DATASETS.TRAIN`` and ``DATASETS.TEST`` on the main process, with
    ``DATALOADER.NUM_WORKERS`` threads.

    Raises:
        DatasetCheckError: on every process, when a problem was found; the message lists the
            first problems and their count.
    """
    num = int(cfg.DATASETS.CHECK_ON_START)
    if num == 0:
        return
    if num < -1:
        raise ValueError(f"DATASETS.CHECK_ON_START must be -1 (all), 0 (off) or N > 0, got {num}")
    names = list(dict.fromkeys([*cfg.DATASETS.TRAIN, *cfg.DATASETS.TEST]))
    reports = None
    if comm.is_main_process():
        workers = max(1, cfg.DATALOADER.NUM_WORKERS)
        reports = [check_dataset(n, num_images=num, workers=workers) for n in names]
    reports = comm.all_gather(reports)[0]
    if any(r.problems for r in reports):
        raise _start_error(reports, num)
    checked = {r.dataset: r.checked for r in reports}
    logger.info("DATASETS.CHECK_ON_START: no problem in the images checked %s", checked)
