"""``Problem``: one fault a dataset check found."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Problem"]


@dataclass(frozen=True)
class Problem:
    """One fault of a dataset: ``file`` (path, or the dataset name), the ``field`` at fault (a
    dataset-dict key, a JSON key, a CSV row and column), the ``value`` found and what was
    ``expected``. ``str(problem)`` is the line ``tools/check_dataset.py`` prints."""

    file: str
    field: str
    value: str
    expected: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field}: {self.value} (expected {self.expected})"
