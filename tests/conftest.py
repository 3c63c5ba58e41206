"""Settings shared by every test directory, and how the suite spreads over CPU cores.

``uv run pytest`` runs the tests in one pytest-xdist worker per core (``-n auto`` in
pyproject.toml's addopts, at most :data:`MAX_WORKERS`; ``-n 0`` runs them in this process). Each
worker's torch then uses its share of the cores, and so do the ``train_net.py`` processes a test
starts (they inherit ``OMP_NUM_THREADS``). The workers take the tests one unit at a time
(``--dist loadgroup``): a test file is one unit, so its module fixtures are built once, except the
long trainings marked ``@pytest.mark.slow(seconds=...)``, which are units of their own and start
first, longest first, so that no worker is left with one of them at the end.
"""

import os

import pytest
from hypothesis import settings

# Property-based tests draw the same examples on every run (CI is reproducible) and have no
# per-example deadline (a busy 2-core machine is slow at times); each test sets its own
# max_examples. HYPOTHESIS_PROFILE=explore draws new examples, to hunt for failures locally.
settings.register_profile("ci", derandomize=True, deadline=None, database=None, print_blob=True)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# each worker imports torch and builds models; a training test adds a process and its loader
# workers, so more workers than this gain little and cost memory
MAX_WORKERS = 4


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1 and "OMP_NUM_THREADS" not in os.environ:
    # set before torch is imported (test modules import it after this file), so that the
    # workers do not oversubscribe the cores: two 2-thread workers on 2 cores run slower than
    # two 1-thread ones
    os.environ["OMP_NUM_THREADS"] = str(max(1, _cores() // _WORKERS))


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    return max(1, min(_cores(), MAX_WORKERS))


def _stated_seconds(item: pytest.Item) -> float:
    marker = item.get_closest_marker("slow")
    return float(marker.kwargs.get("seconds", 0)) if marker is not None else 0.0


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER") or not config.getvalue("loadgroup"):
        return
    # every worker collects and sorts alike (xdist checks that the collections agree)
    items.sort(key=_stated_seconds, reverse=True)  # stable: the rest keep their order
    for item in items:
        if _stated_seconds(item) == 0:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


@pytest.fixture(scope="session")
def synthetic_datasets(tmp_path_factory: pytest.TempPathFactory):
    """``UPER_PARSING_DATASETS`` for the processes a test starts on the built-in synthetic
    scenes: one folder for the whole run, shared by every xdist worker, so that the scenes
    (about 10 s of one core) are generated once, by the first process that needs them. The
    generator locks the folder and renames a finished set into place, so the others wait for it
    and never read half a set (``data/datasets/synthetic/generate.py``)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's folder, above each worker's own
    root = base / "synthetic_datasets"
    root.mkdir(exist_ok=True)
    return root
