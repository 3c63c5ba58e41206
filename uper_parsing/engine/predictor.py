"""Inference on single images (``Predictor``), and pictures of predictions on a dataset's images.

A ``Predictor`` is built from a config (``Predictor(cfg)``, detectron2's ``DefaultPredictor``) or
from a checkpoint alone (``Predictor.from_checkpoint(path)``: the trainer's checkpoints carry
their config and metadata). It runs images through the real test mapper of the model's task
family (the record's mapper: the test-time resize, one copy of it) and draws predictions with the
family's drawer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..utils import comm

__all__ = ["DefaultPredictor", "Predictor", "write_prediction_pictures"]

logger = logging.getLogger(__name__)

_FORMATS = ("RGB", "BGR")


class Predictor:
    """A model ready for single images: its task family's test mapper, the model, its drawer.

    Example::

        predictor = Predictor.from_checkpoint("output/model_final.pth")
        outputs = predictor("photo.jpg")  # or an (H, W, 3) uint8 array
        picture = predictor.draw("photo.jpg", outputs)  # (H', W', 3) uint8 RGB

    Attributes:
        cfg: the config (a clone of the one given).
        model: the model (unwrapped from DistributedDataParallel), run in eval mode.
        metadata: what predictions are drawn with (class names, colours ...): a ``data.Metadata``,
            or None when nothing holds it.
        family: the ``tasks.TaskFamily`` of the model (None for a model of no known family).
        input_format: the channel order the model reads (``INPUT.FORMAT``).
    """

    def __init__(
        self,
        cfg: Any,
        model: nn.Module | None = None,
        *,
        metadata: Any = None,
        confidence_threshold: float | None = None,
    ) -> None:
        """
        Args:
            cfg: the model's config. Without ``model`` the model is built from it (config values
                still unset, such as a multi-task parser's class counts, filled from the
                metadata first) and ``MODEL.WEIGHTS`` is loaded.
            model: a built model, used as it is (e.g. the one being trained).
            metadata: the class lists to draw with; default ``tasks.find_metadata(cfg)`` (stored
                in ``MODEL.WEIGHTS``, else ``DATASETS.TEST[0]``'s, else ``DATASETS.TRAIN[0]``'s).
            confidence_threshold: instances scoring lower are dropped (the family's
                ``confidence_keys``, e.g. Panoptic FPN's score and merge thresholds); only when
                the predictor builds the model, and only for a family with scored instances.
        """
        from ..tasks import configure_model, find_family, find_metadata

        self.cfg = cfg.clone()
        self.metadata = metadata if metadata is not None else find_metadata(self.cfg)
        self.family = find_family(self.cfg, self.metadata)
        if confidence_threshold is not None:
            _set_confidence(self.cfg, self.family, confidence_threshold, model)
        if model is None:
            configure_model(self.cfg, self.metadata, check=False)
            model = _built_and_loaded(self.cfg)
        self.model = comm.unwrap_model(model)
        self.input_format = self.cfg.INPUT.FORMAT
        self.mapper = _test_mapper(self.cfg, self.family, self.metadata)

    @classmethod
    def from_checkpoint(
        cls,
        path: str,
        config: Any = None,
        device: str | None = None,
        *,
        overrides: Sequence[str] = (),
        confidence_threshold: float | None = None,
    ) -> Predictor:
        """A predictor from a checkpoint, with no config file or dataset: the config and the
        metadata come from the checkpoint (the trainer's checkpoints store both).

        Args:
            path: the checkpoint (a path or URL, as ``MODEL.WEIGHTS``).
            config: a config file or ``CfgNode`` to use instead of the stored config (needed for
                a checkpoint that stores none); its registered ``DATASETS.TEST`` / ``TRAIN``
                give the metadata when the checkpoint stores none.
            device: "cpu", "cuda", "cuda:1" ...; default the config's ``MODEL.DEVICE`` (the CPU
                when CUDA is absent).
            overrides: ``KEY VALUE`` config overrides, applied last.
            confidence_threshold: as for ``Predictor``.

        Raises:
            ValueError: the checkpoint stores no config and ``config`` is None, or it stores no
                metadata and the config names no registered dataset holding class lists (the
                message says what to pass).
        """
        from ..checkpoint import read_checkpoint_record
        from .defaults import resolve_device

        stored_config, stored = read_checkpoint_record(path)
        cfg = _checkpoint_config(path, stored_config, config)
        cfg.merge_from_list(list(overrides))
        cfg.MODEL.WEIGHTS = str(path)
        cfg.MODEL.BACKBONE.PRETRAINED = ""  # the checkpoint holds every weight: no download
        if device is not None:
            cfg.MODEL.DEVICE = device
        resolve_device(cfg)
        metadata = _checkpoint_metadata(path, stored, cfg)
        cfg.freeze()
        return cls(cfg, metadata=metadata, confidence_threshold=confidence_threshold)

    def read(
        self, image: np.ndarray | str | os.PathLike, *, format: str | None = None
    ) -> np.ndarray:
        """The (H, W, 3) uint8 image in the model's ``input_format``.

        Args:
            image: an (H, W, 3) uint8 array in ``format`` order (default ``input_format``), or
                the path of an image file.
        """
        from ..data import read_image

        if isinstance(image, str | os.PathLike):
            return read_image(image, format=self.input_format)
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            shape = getattr(image, "shape", None)
            raise ValueError(f"expected an (H, W, 3) uint8 image or a path, got {shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
        given = _format(format or self.input_format)
        return image if given == self.input_format else image[:, :, ::-1]

    def __call__(
        self, image: np.ndarray | str | os.PathLike, *, format: str | None = None
    ) -> dict[str, Any]:
        """The model's outputs for one image, at the image's size (``sem_seg`` (K, H, W)
        scores; ``panoptic_seg``, ``instances``; a parser's task outputs).

        Args:
            image: an (H, W, 3) uint8 array in ``format`` channel order (default the model's
                ``INPUT.FORMAT``, as ``DefaultPredictor`` takes it), or an image file's path.
        """
        inputs = self.mapper({"image": self.read(image, format=format)})
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                return self.model([inputs])[0]
        finally:
            self.model.train(was_training)

    def draw(
        self,
        image: np.ndarray | str | os.PathLike,
        outputs: dict[str, Any],
        *,
        format: str | None = None,
        dataset_dict: dict | None = None,
    ) -> np.ndarray:
        """The picture of ``outputs`` (the family's drawer): [image | prediction], and the
        ground truth when ``dataset_dict`` names its files.

        Args:
            image: as for ``__call__``: the image the outputs were predicted on.

        Returns:
            (H', W', 3) uint8 RGB.
        """
        if self.family is None or self.metadata is None:
            raise ValueError(
                "No class names to draw with: the model's task family and class lists are "
                "unknown (no metadata in MODEL.WEIGHTS and no registered DATASETS.TEST); pass "
                "metadata=, or config= (Predictor.from_checkpoint) whose DATASETS.TEST names a "
                "registered dataset"
            )
        rgb = self.read(image, format=format)
        if self.input_format == "BGR":
            rgb = rgb[:, :, ::-1]
        return self.family.draw(
            np.ascontiguousarray(rgb), outputs, dataset_dict or {}, self.metadata
        )


DefaultPredictor = Predictor  # detectron2's name: DefaultPredictor(cfg)


def _format(name: str) -> str:
    if name.upper() not in _FORMATS:
        raise ValueError(f"format must be one of {_FORMATS}, got {name!r}")
    return name.upper()


def _built_and_loaded(cfg: Any) -> nn.Module:
    """``build_model(cfg)`` with ``MODEL.WEIGHTS`` loaded (as ``MODEL.WEIGHTS_FORMAT`` says),
    ready for inference only (``prepare_for_inference``: ``TEST.FOLD_BATCH_NORM``)."""
    from ..checkpoint import Checkpointer
    from ..modeling import build_model, prepare_for_inference

    model = build_model(cfg)
    checkpointer = Checkpointer(
        model, partial=cfg.MODEL.WEIGHTS_PARTIAL, weights_format=cfg.MODEL.WEIGHTS_FORMAT
    )
    checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=False)
    return prepare_for_inference(model, cfg)


def _test_mapper(cfg: Any, family: Any, metadata: Any) -> Any:
    """The family's test mapper (``INPUT.DATASET_MAPPER_NAME``), with ``metadata``."""
    if family is not None:
        return family.build_mapper(cfg, is_train=False, metadata=metadata)
    from ..data.mappers import build_mapper

    return build_mapper(cfg, False)


def _set_confidence(cfg: Any, family: Any, threshold: float, model: nn.Module | None) -> None:
    """Set the family's ``confidence_keys`` of ``cfg`` to ``threshold``."""
    keys = family.confidence_keys if family is not None else ()
    if not keys:
        name = family.name if family is not None else "unknown"
        raise ValueError(
            f"confidence_threshold is for models with scored instances (panoptic); this is a "
            f"{name} model"
        )
    if model is not None:
        raise ValueError("confidence_threshold applies when the Predictor builds the model")
    cfg.defrost()
    cfg.merge_from_list([x for key in keys for x in (key, float(threshold))])
    cfg.freeze()


def _checkpoint_config(path: str, stored: str | None, config: Any) -> Any:
    """``config`` (a file or CfgNode) when given, else the config stored in ``path``."""
    from ..config import CfgNode, get_cfg

    if isinstance(config, CfgNode):
        cfg = config.clone()
        cfg.defrost()
        return cfg
    cfg = get_cfg()
    if config is not None:
        cfg.merge_from_file(os.fspath(config))
    elif stored is not None:
        cfg.merge_from_yaml_text(stored, f"the config stored in {path}")
    else:
        raise ValueError(
            f"{path} stores no config (a checkpoint written before checkpoints carried their "
            "config, or converted without --config-file): pass config= the config file it was "
            "trained with (demo.py: --config-file)"
        )
    return cfg


def _checkpoint_metadata(path: str, stored: dict | None, cfg: Any) -> Any:
    """The metadata stored in ``path``, else that of the config's registered datasets (those of
    ``DATASETS.REGISTER`` registered first); a ValueError naming what to pass without either."""
    from ..data.datasets import register_declared_datasets
    from ..tasks import TASK_REGISTRY, find_family, registered_metadata

    if stored is not None:
        family = TASK_REGISTRY.get(stored.get("evaluator_type")) or find_family(cfg)
        if family is not None and family.has_metadata(stored):
            return family.restore_metadata(stored, f"{path} (stored metadata)")
    register_declared_datasets(cfg)
    metadata = registered_metadata(cfg)
    if metadata is None:
        raise ValueError(
            f"{path} stores no metadata (class names and colours: a checkpoint written before "
            "checkpoints carried them), and the config's DATASETS.TEST "
            f"{list(cfg.DATASETS.TEST)} / DATASETS.TRAIN {list(cfg.DATASETS.TRAIN)} name no "
            "registered dataset holding class lists: pass config= (demo.py: --config-file) a "
            "config whose DATASETS.TEST names a registered dataset of the classes the model was "
            "trained on (DATASETS.REGISTER may declare it), or re-save the checkpoint with this "
            "version's trainer"
        )
    return metadata


def _spread(count: int, total: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)``."""
    if total == 0 or count <= 0:
        return []
    return sorted({int(i) for i in np.linspace(0, total - 1, min(count, total))})


def write_prediction_pictures(
    cfg: Any, model: nn.Module, dataset_name: str, output_dir: str, num_images: int | None = None
) -> list[str]:
    """Write pictures of the predictions on ``num_images`` images of a dataset, drawn by the
    task record of its ``metadata.evaluator_type`` (semantic, panoptic: [image | prediction |
    ground truth]).

    Args:
        num_images: how many (spread over the dataset); default ``TEST.VIS_NUM_IMAGES``.

    Returns:
        The paths written, ``output_dir/<dataset_name>_<image_id>.png``.
    """
    from ..data import DatasetCatalog, MetadataCatalog, read_image
    from ..tasks import TASK_REGISTRY
    from ..visualization import save_image

    num_images = cfg.TEST.VIS_NUM_IMAGES if num_images is None else num_images
    dicts = DatasetCatalog.get(dataset_name)
    metadata = MetadataCatalog.get(dataset_name)
    family = TASK_REGISTRY.get(metadata.get("evaluator_type", "sem_seg"))
    if family is None:
        logger.warning("No pictures for %s: evaluator_type has no task record", dataset_name)
        return []
    predictor = Predictor(cfg, model=model, metadata=metadata)
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    for idx in _spread(num_images, len(dicts)):
        d = dicts[idx]
        rgb = read_image(d["file_name"], format="RGB")
        outputs = predictor(rgb, format="RGB")
        picture = family.draw(rgb, outputs, d, metadata)
        image_id = d.get("image_id", os.path.splitext(os.path.basename(d["file_name"]))[0])
        safe_id = str(image_id).replace("/", "_")  # Broden ids carry their folder
        path = os.path.join(output_dir, f"{dataset_name}_{safe_id}.png")
        save_image(picture, path)
        paths.append(path)
    return paths
