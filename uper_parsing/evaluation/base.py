"""The sequence every evaluator ends with: gather to the main process, score, log, write JSON.

:class:`GatheringEvaluator` holds it once; an evaluator says what one process keeps
(``local_state``), how the processes' states combine (``merge_states``), how the combined state is
scored (``score``) and what its log lines are (``log_results``, built with :func:`headline` and
:func:`metrics_table`).
"""

from __future__ import annotations

import abc
import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from ..utils import comm
from .evaluator import DatasetEvaluator

__all__ = ["GatheringEvaluator", "Results", "headline", "metrics_table", "write_json"]

logger = logging.getLogger(__name__)

Results = dict[str, dict[str, float]]
"""``{task: {metric: value}}``, what ``evaluate`` returns on the main process."""


def headline(metrics: Mapping[str, float]) -> str:
    """``"mIoU 42.50, pACC 80.00"``: the metrics without a per-class key (no ``-`` in the name),
    in their order."""
    return ", ".join(f"{name} {value:.2f}" for name, value in metrics.items() if "-" not in name)


def metrics_table(
    columns: Sequence[str],
    rows: Sequence[tuple[str, Sequence[float | None]]],
    *,
    label: str = "class",
    label_width: int = 24,
) -> list[str]:
    """Lines of a fixed-width table: a header, then one line per ``(name, values)`` row, names cut
    to ``label_width - 1`` characters, values with two decimals and ``-`` for ``None``."""
    lines = [f"{label:<{label_width}}" + "".join(f"{c:>8}" for c in columns)]
    for name, values in rows:
        cells = "".join(f"{v:8.2f}" if v is not None else f"{'-':>8}" for v in values)
        lines.append(f"{name[: label_width - 1]:<{label_width}}{cells}")
    return lines


def write_json(data: Any, folder: str, file_name: str, *, indent: int | None = 2) -> str:
    """Write ``data`` as ``folder/file_name`` (the folder created when missing); returns the
    path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, file_name)
    with open(path, "w") as f:
        json.dump(data, f, indent=indent)
    return path


class GatheringEvaluator(DatasetEvaluator, abc.ABC):
    """A dataset evaluator whose ``evaluate`` gathers, scores, logs and writes in one place.

    ``evaluate()``: the ``local_state()`` of every process is gathered on the main process
    (``comm.gather``; with ``distributed=False`` this process's alone), combined by
    ``merge_states``, and ``score`` turns it into ``{task: {metric: value}}``. Non-empty results
    are logged (``log_results``) and, with an ``output_dir``, written to
    ``output_dir/results_file``. Non-main processes return ``None``; an evaluator with nothing to
    score returns ``{}`` (its ``score`` logs why) and writes nothing.
    """

    results_file: ClassVar[str]  # name of the JSON file of the results, set by each subclass

    def __init__(
        self, dataset_name: str, *, output_dir: str | None = None, distributed: bool = True
    ) -> None:
        """
        Args:
            dataset_name: name in ``MetadataCatalog``; ``self._metadata`` is its metadata.
            output_dir: where ``results_file`` (and any file the evaluator adds) is written;
                ``None``: nothing is written.
            distributed: gather from every process before scoring.
        """
        from ..data import MetadataCatalog

        if not getattr(type(self), "results_file", ""):
            raise TypeError(f"{type(self).__name__} must set the class attribute results_file")
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        self._metadata = MetadataCatalog.get(dataset_name)

    @abc.abstractmethod
    def local_state(self) -> Any:
        """What this process accumulated since ``reset`` (picklable)."""

    @abc.abstractmethod
    def merge_states(self, states: list[Any]) -> Any:
        """One state from the states of every process, in rank order."""

    @abc.abstractmethod
    def score(self, state: Any) -> Results:
        """Metrics of the merged state; ``{}`` (with a warning) when there is nothing to score."""

    @abc.abstractmethod
    def log_results(self, results: Results) -> None:
        """Log the results (called on the main process with non-empty results)."""

    def gather_state(self) -> Any | None:
        """The merged state of every process on the main process, ``None`` on the others."""
        if not self._distributed:
            return self.merge_states([self.local_state()])
        comm.synchronize()
        states = comm.gather(self.local_state())
        if not comm.is_main_process():
            return None
        return self.merge_states(states)

    def evaluate(self) -> Results | None:
        state = self.gather_state()
        if state is None:
            return None
        results = self.score(state)
        if results:
            self.log_results(results)
            if self._output_dir:
                write_json(results, self._output_dir, self.results_file)
        return results
