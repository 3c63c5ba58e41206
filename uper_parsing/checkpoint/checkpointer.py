"""Checkpoints with detectron2's names, written atomically, loaded without silent losses.

``Checkpointer`` is fvcore's (``module.`` prefixes stripped, ``resume_or_load``) with these changes:

- every file is written to ``<name>.tmp``, fsynced and renamed, so a run killed while saving leaves
  the previous checkpoint and ``last_checkpoint`` intact; only the main process writes by default;
- loading reports every missing, unexpected and shape-mismatched tensor grouped by module, and a
  shape mismatch is an error unless ``partial=True`` (``MODEL.WEIGHTS_PARTIAL``);
- detectron2 ``.pkl`` / ``.pth`` files and Caffe2 ImageNet ResNets are converted on load
  (``checkpoint.detectron2``); ``file://`` and ``detectron2://`` URLs work besides paths and http.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

import torch
from fvcore.common.checkpoint import Checkpointer as _FvcoreCheckpointer
from fvcore.common.checkpoint import PeriodicCheckpointer as _FvcorePeriodicCheckpointer
from fvcore.common.checkpoint import _filter_reused_missing_keys, _IncompatibleKeys
from torch import nn

from ..utils import comm
from .atomic import atomic_write
from .detectron2 import (
    Conversion,
    convert_detectron2_file,
    convert_detectron2_state_dict,
    is_detectron2_state_dict,
    is_resnet_state_dict,
)
from .paths import register_url_handlers
from .report import format_key_groups, format_shape_mismatches, shape_mismatches

__all__ = ["Checkpointer", "PeriodicCheckpointer", "resnet_prefix"]

LAST_CHECKPOINT = "last_checkpoint"  # file in save_dir naming the newest checkpoint


class Checkpointer(_FvcoreCheckpointer):
    """Save / load a model (unwrapped from DDP) and checkpointables (optimizer, scheduler, grad
    scaler ...) as ``save_dir/<name>.pth``; the newest name is kept in ``save_dir/last_checkpoint``.

    Example::

        checkpointer = Checkpointer(model, "output", optimizer=opt, scheduler=sched)
        checkpointer.save("model_0009999", iteration=9999)
        extra = checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=True)  # {"iteration": ...}
    """

    def __init__(
        self,
        model: nn.Module,
        save_dir: str = "",
        *,
        save_to_disk: bool | None = None,
        partial: bool = False,
        **checkpointables: Any,
    ) -> None:
        """
        Args:
            save_to_disk: whether ``save`` writes files; defaults to "this is the main process".
            partial: load checkpoints whose tensors differ in shape from the model's (those
                keep their current values, with a warning); False raises on such tensors.
            checkpointables: objects with ``state_dict()`` / ``load_state_dict()``.
        """
        if save_to_disk is None:
            save_to_disk = comm.is_main_process()
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.logger = logging.getLogger(__name__)
        self.partial = partial
        register_url_handlers(self.path_manager)

    def save(self, name: str, **kwargs: Any) -> None:
        """Write ``{"model", <checkpointables>, **kwargs}`` to ``save_dir/<name>.pth`` atomically
        and point ``last_checkpoint`` at it."""
        if not self.save_dir or not self.save_to_disk:
            return
        data: dict[str, Any] = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        if os.path.basename(save_file) != basename:
            raise ValueError(f"Checkpoint name must be a plain file name, got {name!r}")
        self.logger.info("Saving checkpoint to %s", save_file)
        with atomic_write(save_file, "wb") as f:
            torch.save(data, f)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Atomically record ``last_filename_basename`` as the newest checkpoint."""
        with atomic_write(os.path.join(self.save_dir, LAST_CHECKPOINT), "w") as f:
            f.write(last_filename_basename)

    def _load_file(self, filename: str) -> dict[str, Any]:
        """Read a checkpoint as ``{"model": state dict, ...}``: this class's own files, a bare
        state dict, mmseg-style ``{"state_dict": ...}``, and, converted to this project's names,
        detectron2 ``.pkl`` / ``.pth`` files and Caffe2 ImageNet ResNets (``.pkl``). A bare
        ResNet state dict is placed under the model's ResNet."""
        if filename.endswith(".pkl"):
            return self._converted(convert_detectron2_file(filename), filename)
        checkpoint = _read_torch_checkpoint(filename)
        if is_detectron2_state_dict(checkpoint["model"]):
            author = str(checkpoint.get("__author__", "detectron2"))
            dropped = sorted(k for k in checkpoint if k not in ("model", "__author__"))
            if dropped:
                self.logger.info(
                    "%s is a detectron2 checkpoint: using its model only, not %s",
                    filename,
                    ", ".join(dropped),
                )
            conversion = convert_detectron2_state_dict(checkpoint["model"], author=author)
            return self._converted(conversion, filename)
        if is_resnet_state_dict(checkpoint["model"]):
            checkpoint["model"] = self._under_resnet(checkpoint["model"], filename)
        return checkpoint

    def _converted(self, conversion: Conversion, filename: str) -> dict[str, Any]:
        self.logger.info("Converted %s: %s", filename, conversion.summary())
        state = conversion.state_dict
        if conversion.kind == "resnet":
            state = self._under_resnet(state, filename)
        return {"model": state, "__author__": conversion.author}

    def _under_resnet(self, state: dict[str, Any], filename: str) -> dict[str, Any]:
        """Prefix a bare ResNet state dict (``stem.*``, ``res2.*``) with the model's ResNet
        (e.g. ``backbone.bottom_up.``); unchanged when the model is a bare ResNet itself."""
        prefix = resnet_prefix(self.model.state_dict())
        if not prefix:
            return state
        self.logger.info(
            "%s holds a ResNet only: loading it into %s (the rest keeps its initial values)",
            filename,
            prefix.rstrip("."),
        )
        return {prefix + k: v for k, v in state.items()}

    def _load_model(self, checkpoint: dict[str, Any]) -> _IncompatibleKeys:
        """Load ``checkpoint["model"]`` into the model. Tensors whose shape differs from the
        model's raise a ValueError listing them (before anything is loaded) unless
        ``self.partial``, which skips them."""
        state = checkpoint.pop("model")
        self._convert_ndarray_to_tensor(state)
        if state and all(k.startswith("module.") for k in state):
            state = {k[len("module.") :]: v for k, v in state.items()}
        mismatched = shape_mismatches(state, self.model.state_dict())
        if mismatched and not self.partial:
            raise ValueError(
                f"{len(mismatched)} checkpoint tensor(s) differ in shape from the model:\n  "
                + "\n  ".join(format_shape_mismatches(mismatched))
                + "\nSet MODEL.WEIGHTS_PARTIAL True (Checkpointer(partial=True)) to load the rest "
                "and keep these at their initial values."
            )
        for key, _, _ in mismatched:
            state.pop(key)
        result = self.model.load_state_dict(state, strict=False)
        return _IncompatibleKeys(
            missing_keys=result.missing_keys,
            unexpected_keys=result.unexpected_keys,
            incorrect_shapes=mismatched,
        )

    def _log_incompatible_keys(self, incompatible: _IncompatibleKeys) -> None:
        """Warn about every tensor not loaded, grouped by module (BN counters left out)."""
        skipped = {key for key, _, _ in incompatible.incorrect_shapes}
        really_missing = set(_filter_reused_missing_keys(self.model, incompatible.missing_keys))
        missing = [  # in the model's order
            k
            for k in incompatible.missing_keys
            if k in really_missing and k not in skipped and not k.endswith("num_batches_tracked")
        ]
        reports = [
            (
                "shape-mismatched tensor(s) skipped (partial load: they keep their initial values)",
                format_shape_mismatches(incompatible.incorrect_shapes),
            ),
            (
                "model tensor(s) missing in the checkpoint (they keep their initial values)",
                format_key_groups(missing, "missing"),
            ),
            (
                "checkpoint tensor(s) the model has no place for",
                format_key_groups(incompatible.unexpected_keys, "unexpected"),
            ),
        ]
        counts = (
            len(incompatible.incorrect_shapes),
            len(missing),
            len(incompatible.unexpected_keys),
        )
        for count, (what, lines) in zip(counts, reports):
            if count:
                self.logger.warning("%d %s:\n  %s", count, what, "\n  ".join(lines))
        if not any(counts):
            self.logger.info("Every model tensor loaded from the checkpoint")


def resnet_prefix(model_keys: Iterable[str]) -> str | None:
    """Where a model holds its (one) ResNet: ``"backbone.bottom_up."`` for a ResNet-FPN,
    ``"backbone."`` for a plain ResNet backbone, ``""`` for a bare ResNet; None when it holds
    none or several."""
    anchor = "stem.conv1.weight"
    prefixes = [k[: -len(anchor)] for k in model_keys if k == anchor or k.endswith("." + anchor)]
    return prefixes[0] if len(prefixes) == 1 else None


def _read_torch_checkpoint(filename: str) -> dict[str, Any]:
    """``torch.load`` (tensors and plain containers only) -> ``{"model": state dict, ...}``."""
    checkpoint = torch.load(filename, map_location=torch.device("cpu"), weights_only=True)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"Checkpoint {filename} holds a {type(checkpoint).__name__}, not a dict")
    if "model" in checkpoint:
        return checkpoint
    if isinstance(checkpoint.get("state_dict"), dict):
        return {"model": checkpoint["state_dict"]}
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return {"model": checkpoint}
    raise ValueError(
        f"Checkpoint {filename} has no 'model' entry and is not a state dict; "
        f"top-level keys: {sorted(checkpoint)[:10]}"
    )


class PeriodicCheckpointer(_FvcorePeriodicCheckpointer):
    """Save ``model_{iteration:07d}`` after every ``period``-th iteration and ``model_final``
    after iteration ``max_iter - 1`` (each with ``iteration`` stored). ``period <= 0`` saves
    only ``model_final``; ``max_to_keep`` deletes older periodic checkpoints."""

    def step(self, iteration: int, **kwargs: Any) -> None:
        if self.period > 0:
            super().step(iteration, **kwargs)
            return
        iteration = int(iteration)
        if self.max_iter is not None and iteration >= self.max_iter - 1:
            self.checkpointer.save(f"{self.file_prefix}_final", iteration=iteration, **kwargs)
