"""Shared fixtures of the data tests: hand-made label datasets and a tiny synthetic set."""

from __future__ import annotations

from pathlib import Path

import pytest

from uper_parsing.data import DatasetCatalog, SyntheticParams, register_synthetic_scenes
from uper_parsing.data.datasets import DATASETS_ENV
from uper_parsing.data.datasets.synthetic import prepare_synthetic_scenes

TINY_PREFIX = "synthetic_tiny"
TINY_PARAMS = SyntheticParams(seed=3, image_size=64, num_train=20, num_val=8)


@pytest.fixture(scope="session")
def tiny_synthetic_root(tmp_path_factory) -> Path:
    """A datasets root holding a tiny synthetic set (64 px, 20 train / 8 val), registered as
    ``synthetic_tiny_sem_seg_{train,val}``."""
    root = tmp_path_factory.mktemp("datasets")
    prepare_synthetic_scenes(root / TINY_PREFIX, TINY_PARAMS)
    if f"{TINY_PREFIX}_sem_seg_train" not in DatasetCatalog:
        register_synthetic_scenes(TINY_PREFIX, params=TINY_PARAMS)
    return root


@pytest.fixture
def tiny_synthetic(tiny_synthetic_root, monkeypatch) -> tuple[str, str]:
    """Names of the tiny synthetic train / val sets, with the datasets root pointing at them."""
    monkeypatch.setenv(DATASETS_ENV, str(tiny_synthetic_root))
    return f"{TINY_PREFIX}_sem_seg_train", f"{TINY_PREFIX}_sem_seg_val"


@pytest.fixture
def fresh_name(request):
    """A dataset name unique to the test; removed from both catalogs afterwards."""
    from uper_parsing.data import MetadataCatalog

    name = f"test_{request.node.name}".replace("[", "_").replace("]", "_")
    yield name
    for catalog in (DatasetCatalog, MetadataCatalog):
        if name in catalog:
            catalog.remove(name)
