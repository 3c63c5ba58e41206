"""EVALUATOR_REGISTRY and build_evaluator: the evaluator class comes from the dataset's metadata."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..utils.registry import Registry
from .evaluator import DatasetEvaluator
from .sem_seg_evaluation import SemSegEvaluator

__all__ = ["EVALUATOR_REGISTRY", "build_evaluator", "register_evaluator"]

EVALUATOR_REGISTRY = Registry("EVALUATOR")
EVALUATOR_REGISTRY.__doc__ = """
Evaluator classes keyed by ``metadata.evaluator_type`` ("sem_seg", ...).

A registered class is built by ``cls.from_config(cfg, dataset_name, output_folder)`` when it has
that classmethod, and by ``cls(dataset_name, output_dir=output_folder)`` otherwise.
"""


def register_evaluator(evaluator_type: str) -> Callable[[type], type]:
    """Class decorator: register an evaluator under a metadata ``evaluator_type``.

    fvcore's ``Registry.register`` keys objects by ``__name__``; evaluators are looked up by the
    type string datasets declare, so the key is given explicitly.
    """

    def deco(cls: type) -> type:
        EVALUATOR_REGISTRY._do_register(evaluator_type, cls)
        return cls

    return deco


register_evaluator("sem_seg")(SemSegEvaluator)


def build_evaluator(
    cfg: Any, dataset_name: str, output_folder: str | None = None
) -> DatasetEvaluator:
    """The evaluator registered under ``MetadataCatalog.get(dataset_name).evaluator_type``.

    Args:
        cfg: the run's config (``OUTPUT_DIR`` gives the default output folder).
        dataset_name: a name in ``MetadataCatalog``.
        output_folder: where the evaluator writes its files; defaults to
            ``OUTPUT_DIR/inference/<dataset_name>``.
    """
    from ..data import MetadataCatalog

    evaluator_type = getattr(MetadataCatalog.get(dataset_name), "evaluator_type", None)
    known = sorted(name for name, _ in EVALUATOR_REGISTRY)
    if evaluator_type is None or evaluator_type not in EVALUATOR_REGISTRY:
        raise KeyError(
            f"No evaluator for dataset {dataset_name!r}: its metadata evaluator_type is "
            f"{evaluator_type!r}; known types: {known}. Set evaluator_type when registering "
            "the dataset, or register an evaluator with register_evaluator(<type>)."
        )
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
    evaluator_cls = EVALUATOR_REGISTRY.get(evaluator_type)
    if hasattr(evaluator_cls, "from_config"):
        return evaluator_cls.from_config(cfg, dataset_name, output_folder)
    return evaluator_cls(dataset_name, output_dir=output_folder)
