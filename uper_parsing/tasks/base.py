"""``TaskFamily``: everything the rest of the code asks about one task family, in one record.

A family is a kind of dataset and of model: semantic segmentation (``"sem_seg"``), panoptic
segmentation (``"coco_panoptic_seg"``), unified perceptual parsing (``"multitask"``). Its record is
registered once in ``TASK_REGISTRY`` under the ``evaluator_type`` its datasets' metadata declares;
the trainer, the loaders, the predictor, ``train_net.py`` and ``demo.py`` look the record up
instead of branching on metadata keys, output keys or config values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["ModelArg", "TaskFamily", "TaskRegistry", "TASK_REGISTRY"]

# (image (H, W, 3) uint8 RGB, outputs of one image, its dataset dict or {}, metadata) -> picture
Drawer = Callable[[np.ndarray, dict, dict, Any], np.ndarray]
# (folder, stem, outputs of one image, metadata) -> paths of the files written besides the picture
DemoWriter = Callable[[str, str, dict, Any], list[str]]


@dataclasses.dataclass(frozen=True)
class ModelArg:
    """One model config value a family derives from a dataset's metadata.

    Attributes:
        key: dotted config key, e.g. ``"MODEL.SEM_SEG_HEAD.NUM_CLASSES"``.
        value: the value the metadata asks for (plain Python: int, list ...).
        reason: why, naming the dataset and the metadata field, e.g. ``"dataset 'x' has 10
            classes (metadata stuff_classes)"``.
        unset: the config value meaning "not set": set-up writes ``value`` in its place. None:
            the key always holds a value, which set-up only checks.
    """

    key: str
    value: Any
    reason: str
    unset: Any = None


def _no_unfilled_keys(cfg: Any) -> list[str]:
    return []


@dataclasses.dataclass(frozen=True)
class TaskFamily:
    """What one task family is made of.

    Attributes:
        name: the family's ``metadata.evaluator_type`` (its key in ``TASK_REGISTRY``).
        meta_architectures: names in ``META_ARCH_REGISTRY`` of the family's models, which tell
            the family of a config whose datasets are not registered.
        metadata_keys: the metadata a model of the family needs to run and draw; checkpoints
            store these (``stored_metadata``).
        required_metadata: the keys without which a metadata holds no class lists of the family.
        model_args: ``(metadata, where, cfg) -> [ModelArg]``, the model config values the
            metadata decides (class counts ...), checked or filled once at set-up
            (``tasks.configure_model``); ``where`` names the metadata in messages.
        unfilled_keys: ``cfg -> [key]``, the config keys the model needs that are still unset
            (only families with ``ModelArg.unset`` keys have any).
        mapper: the name in ``MAPPER_REGISTRY`` of the family's dataset mapper.
        evaluator: the name in ``EVALUATOR_REGISTRY`` of the family's evaluator.
        draw: the picture of one prediction (``Drawer``): [image | prediction (| ground truth
            when the dataset dict has it)].
        write_demo: the files ``demo.py`` writes per image besides the picture (``DemoWriter``).
        output_keys: the model's inference output keys, the family's own first.
        confidence_keys: the config keys a confidence threshold sets (``demo.py
            --confidence-threshold``, ``Predictor(confidence_threshold=)``): instance scores;
            () when the family has no scored predictions.
        train_loader: ``(cfg, mapper=None) -> loader`` when the family trains from its own loader
            builder; None: ``data.build_train_loader``.
        int_keyed_metadata: metadata entries that are dicts with int keys (JSON, as in a
            ``.safetensors`` header, turns them into strings; ``restore_metadata`` undoes it).
    """

    name: str
    meta_architectures: tuple[str, ...]
    metadata_keys: tuple[str, ...]
    required_metadata: tuple[str, ...]
    model_args: Callable[[Any, str, Any], list[ModelArg]]
    mapper: str
    evaluator: str
    draw: Drawer
    write_demo: DemoWriter
    output_keys: tuple[str, ...]
    confidence_keys: tuple[str, ...] = ()
    unfilled_keys: Callable[[Any], list[str]] = _no_unfilled_keys
    train_loader: Callable[..., Iterable] | None = None
    int_keyed_metadata: tuple[str, ...] = ()

    def missing_metadata(self, metadata: Any) -> list[str]:
        """The ``required_metadata`` keys ``metadata`` (a ``Metadata``, dict or None) lacks."""
        if metadata is None:
            return list(self.required_metadata)
        return [k for k in self.required_metadata if _get(metadata, k) is None]

    def has_metadata(self, metadata: Any) -> bool:
        """Whether ``metadata`` holds the family's class lists."""
        return not self.missing_metadata(metadata)

    def stored_metadata(self, metadata: Any) -> dict[str, Any]:
        """The entries of ``metadata_keys`` that ``metadata`` has, as plain Python values (lists,
        dicts, str, int, float), with ``evaluator_type``: what a checkpoint stores."""
        out: dict[str, Any] = {}
        for key in self.metadata_keys:
            value = _get(metadata, key)
            if value is not None:
                out[key] = _plain(value)
        out["evaluator_type"] = self.name
        return out

    def restore_metadata(self, stored: Mapping[str, Any], name: str) -> Any:
        """A ``data.Metadata`` called ``name`` holding a checkpoint's stored metadata (int keys
        of the ``int_keyed_metadata`` dicts restored)."""
        from ..data import Metadata

        values = dict(stored)
        for key in self.int_keyed_metadata:
            if isinstance(values.get(key), Mapping):
                values[key] = {int(k): v for k, v in values[key].items()}
        values.setdefault("evaluator_type", self.name)
        return Metadata(name).set(**values)

    def build_mapper(self, cfg: Any, is_train: bool, metadata: Any = None) -> Any:
        """The dataset mapper of ``cfg`` (``INPUT.DATASET_MAPPER_NAME``, which
        ``configure_model`` checks against ``mapper``), with ``metadata`` in place of the
        catalog's when given (a predictor without registered datasets)."""
        from ..data.mappers import MAPPER_REGISTRY

        mapper_cls = MAPPER_REGISTRY.get(cfg.INPUT.DATASET_MAPPER_NAME)
        if metadata is None:
            return mapper_cls(cfg, is_train)
        return mapper_cls(cfg, is_train, metadata=metadata)

    def build_train_loader(self, cfg: Any, mapper: Callable[[dict], dict] | None = None) -> Any:
        """The family's training loader (``train_loader``, default ``data.build_train_loader``)."""
        if self.train_loader is not None:
            return self.train_loader(cfg, mapper)
        from ..data import build_train_loader

        return build_train_loader(cfg, mapper)


class TaskRegistry(Mapping[str, TaskFamily]):
    """``{evaluator_type: TaskFamily}``; ``register`` refuses a name twice."""

    def __init__(self) -> None:
        self._families: dict[str, TaskFamily] = {}

    def register(self, family: TaskFamily) -> TaskFamily:
        """Add ``family`` under ``family.name``; returns it."""
        if family.name in self._families:
            raise ValueError(f"A task family named '{family.name}' is already registered")
        self._families[family.name] = family
        return family

    def remove(self, name: str) -> None:
        """Forget the family ``name`` (KeyError when unknown), as ``DatasetCatalog.remove``."""
        del self._families[self[name].name]

    def get(self, name: str, default: Any = None) -> Any:
        return self._families.get(name, default)

    def __getitem__(self, name: str) -> TaskFamily:
        try:
            return self._families[name]
        except KeyError:
            raise KeyError(
                f"No task family '{name}' (metadata evaluator_type); registered: "
                f"{sorted(self._families)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._families)

    def __len__(self) -> int:
        return len(self._families)


TASK_REGISTRY = TaskRegistry()


def _get(metadata: Any, key: str) -> Any:
    """``metadata[key]`` of a ``Metadata``, a dict or an attribute bag; None when absent."""
    if metadata is None:
        return None
    if hasattr(metadata, "get"):
        return metadata.get(key)
    return getattr(metadata, key, None)


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists and numpy values as Python's."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    return value
