"""Set-up through the task records: which family a config, a metadata or an output belongs to, and
the model config values derived from the datasets' metadata, checked or filled once.

``configure_model(cfg)`` runs at set-up (``default_setup``, ``DefaultTrainer``, ``Predictor``),
so that neither the mappers (data code) read model config to check class counts, nor the models
read dataset catalogs to size their heads.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from .base import TASK_REGISTRY, ModelArg, TaskFamily

__all__ = [
    "configure_model",
    "family_of_outputs",
    "find_family",
    "find_metadata",
    "metadata_label",
    "registered_metadata",
    "stored_metadata",
]

logger = logging.getLogger(__name__)


def _catalog(name: str) -> Any:
    from ..data import MetadataCatalog

    return MetadataCatalog.get(name)


def _family_named(metadata: Any) -> TaskFamily | None:
    if metadata is None:
        return None
    evaluator_type = metadata.get("evaluator_type") if hasattr(metadata, "get") else None
    return TASK_REGISTRY.get(evaluator_type) if evaluator_type else None


def find_family(cfg: Any = None, metadata: Any = None) -> TaskFamily | None:
    """The family of a model: by ``metadata``'s ``evaluator_type``, else by that of
    ``DATASETS.TRAIN[0]``, else by ``MODEL.META_ARCHITECTURE`` (the records'
    ``meta_architectures``), else by ``DATASETS.TEST[0]``'s; None when none tells."""
    candidates = [metadata]
    if cfg is not None and cfg.DATASETS.TRAIN:
        candidates.append(_catalog(cfg.DATASETS.TRAIN[0]))
    for candidate in candidates:
        family = _family_named(candidate)
        if family is not None:
            return family
    if cfg is not None:
        arch = cfg.MODEL.META_ARCHITECTURE
        for family in TASK_REGISTRY.values():
            if arch in family.meta_architectures:
                return family
        if cfg.DATASETS.TEST:
            return _family_named(_catalog(cfg.DATASETS.TEST[0]))
    return None


def family_of_outputs(outputs: Mapping[str, Any]) -> TaskFamily | None:
    """The family whose own output key (``output_keys[0]``) is in ``outputs``, the one with the
    most of its output keys there when several are (a Panoptic FPN also returns ``sem_seg``);
    for outputs drawn with a metadata that names no ``evaluator_type``."""
    matching = [f for f in TASK_REGISTRY.values() if f.output_keys[0] in outputs]
    if not matching:
        return None
    return max(matching, key=lambda f: sum(k in outputs for k in f.output_keys))


def metadata_label(metadata: Any) -> str:
    """How messages name a metadata: ``dataset 'x'`` (its ``name``)."""
    return f"dataset '{getattr(metadata, 'name', '?')}'"


def _sources(cfg: Any, family: TaskFamily, metadata: Any) -> list[tuple[str, Any]]:
    """(label, metadata) of what the model config is derived from: ``metadata`` when given,
    else every dataset of ``DATASETS.TRAIN`` holding the family's class lists."""
    if metadata is not None:
        return [(metadata_label(metadata), metadata)] if family.has_metadata(metadata) else []
    named = [(name, _catalog(name)) for name in cfg.DATASETS.TRAIN]
    return [(f"dataset '{name}'", meta) for name, meta in named if family.has_metadata(meta)]


def _weights_metadata(cfg: Any, family: TaskFamily, unfilled: list[str]) -> tuple[str, Any]:
    """The class lists stored in ``MODEL.WEIGHTS``, for a model whose training set is not
    registered; an error saying what to do when it stores none."""
    from ..checkpoint.metadata import read_checkpoint_metadata

    name = cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else ""
    weights = cfg.MODEL.WEIGHTS
    stored = read_checkpoint_metadata(weights) if weights else None
    if stored is None or family.missing_metadata(stored):
        raise ValueError(
            f"{cfg.MODEL.META_ARCHITECTURE} sizes its heads from class lists: DATASETS.TRAIN[0] "
            f"('{name}') has no {family.required_metadata[0]} and MODEL.WEIGHTS ('{weights}') "
            "stores none; register the training set, pass MODEL.WEIGHTS a checkpoint written "
            f"by this project's trainer or tools/convert_weights.py, or set {', '.join(unfilled)}"
        )
    label = f"the metadata stored in {weights}"
    return label, family.restore_metadata(stored, f"{weights} (stored metadata)")


def _cfg_value(cfg: Any, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(value)} entries)"


def _mismatch(arg: ModelArg, current: Any) -> str:
    unset = f" (or {arg.unset!r}: take it from the metadata)" if arg.unset is not None else ""
    return (
        f"{arg.key} is {_short(current)} but {arg.reason}; set {arg.key} {_short(arg.value)}"
        + unset
    )


@contextlib.contextmanager
def _defrosted(cfg: Any) -> Iterator[Any]:
    frozen = cfg.is_frozen()
    cfg.defrost()
    try:
        yield cfg
    finally:
        if frozen:
            cfg.freeze()


def _check_mapper(cfg: Any, family: TaskFamily) -> None:
    """A config whose mapper is another family's (``INPUT.DATASET_MAPPER_NAME "sem_seg"`` for a
    panoptic dataset) is an error naming the mapper to set; a mapper of no record (a user's
    own) is the user's choice."""
    name = cfg.INPUT.DATASET_MAPPER_NAME
    owners = [f.name for f in TASK_REGISTRY.values() if f.mapper == name]
    if owners and family.mapper != name:
        raise ValueError(
            f"INPUT.DATASET_MAPPER_NAME is '{name}', the mapper of {owners[0]} datasets, but "
            f"DATASETS.TRAIN {list(cfg.DATASETS.TRAIN)} are {family.name} datasets; set "
            f"INPUT.DATASET_MAPPER_NAME {family.mapper}"
        )


def configure_model(cfg: Any, metadata: Any = None, *, check: bool = True) -> TaskFamily | None:
    """Derive the model config values the datasets' metadata decides (the family's
    ``model_args``: class counts ...): once, at set-up, in place (a frozen ``cfg`` stays frozen).

    A key holding its unset value (``ModelArg.unset``) is set to the metadata's value; with
    ``check``, a key holding another value than the metadata's is a ValueError naming the key,
    the dataset and the value to set, and so is a mapper of another family.

    Args:
        metadata: what to derive from (a checkpoint's stored metadata, a predictor's); default:
            every dataset of ``DATASETS.TRAIN`` that holds the family's class lists, else, when
            the model still needs a key (``TaskFamily.unfilled_keys``), the metadata stored in
            ``MODEL.WEIGHTS``.
        check: compare the keys already set (training); False only fills unset keys
            (prediction: the config of a trained model describes it).

    Returns:
        The family (None when neither metadata nor ``MODEL.META_ARCHITECTURE`` tells it).
    """
    family = find_family(cfg, metadata)
    if family is None:
        return None
    sources = _sources(cfg, family, metadata)
    if not sources:
        unfilled = family.unfilled_keys(cfg)
        if not unfilled:
            return family
        sources = [_weights_metadata(cfg, family, unfilled)]
    elif check:
        _check_mapper(cfg, family)
    values: dict[str, Any] = {}
    for label, meta in sources if check else sources[:1]:
        for arg in family.model_args(meta, label, cfg):
            current = values.get(arg.key, _cfg_value(cfg, arg.key))
            if arg.unset is not None and _same(current, arg.unset):
                values[arg.key] = arg.value
                logger.info("%s = %s, as %s", arg.key, _short(arg.value), arg.reason)
            elif check and not _same(current, arg.value):
                raise ValueError(_mismatch(arg, current))
    if values:
        with _defrosted(cfg):
            cfg.merge_from_list([x for item in values.items() for x in item])
    return family


def stored_metadata(cfg: Any) -> Any:
    """The metadata stored in ``MODEL.WEIGHTS`` (a ``data.Metadata``), when it holds the class
    lists of its family; None otherwise (no weights, an older or a foreign checkpoint)."""
    from ..checkpoint.metadata import read_checkpoint_metadata

    weights = cfg.MODEL.WEIGHTS
    stored = read_checkpoint_metadata(weights) if weights else None
    if stored is None:
        return None
    family = _family_named(stored) or find_family(cfg)
    if family is None or not family.has_metadata(stored):
        return None
    return family.restore_metadata(stored, f"{weights} (stored metadata)")


def registered_metadata(cfg: Any) -> Any:
    """``DATASETS.TEST[0]``'s metadata, else ``DATASETS.TRAIN[0]``'s, the first holding some
    family's class lists; None when neither does (not registered)."""
    names = [*cfg.DATASETS.TEST[:1], *cfg.DATASETS.TRAIN[:1]]
    for meta in (_catalog(name) for name in names):
        if any(family.has_metadata(meta) for family in TASK_REGISTRY.values()):
            return meta
    return None


def find_metadata(cfg: Any) -> Any:
    """The metadata a model of ``cfg`` is run and drawn with: that stored in ``MODEL.WEIGHTS``,
    else the registered one (``registered_metadata``); None when there is none."""
    stored = stored_metadata(cfg)
    return stored if stored is not None else registered_metadata(cfg)
