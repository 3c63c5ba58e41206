"""Checkpoints with detectron2's names, written atomically.

``Checkpointer`` is fvcore's (``module.`` prefixes stripped, shape-mismatched tensors skipped,
``resume_or_load``) with two changes: every file is written to ``<name>.tmp``, fsynced and renamed,
so a run killed while saving leaves the previous checkpoint and ``last_checkpoint`` intact; and
only the main process writes by default.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from fvcore.common.checkpoint import Checkpointer as _FvcoreCheckpointer
from fvcore.common.checkpoint import PeriodicCheckpointer as _FvcorePeriodicCheckpointer
from fvcore.common.checkpoint import _filter_reused_missing_keys, _IncompatibleKeys
from torch import nn

from ..utils import comm
from .atomic import atomic_write

__all__ = ["Checkpointer", "PeriodicCheckpointer"]

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
        **checkpointables: Any,
    ) -> None:
        """
        Args:
            save_to_disk: whether ``save`` writes files; defaults to "this is the main process".
            checkpointables: objects with ``state_dict()`` / ``load_state_dict()``.
        """
        if save_to_disk is None:
            save_to_disk = comm.is_main_process()
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.logger = logging.getLogger(__name__)

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
        """Read a checkpoint (tensors and plain containers only). Besides this class's own files it
        accepts a bare state dict and mmseg-style ``{"state_dict": ...}`` files (model only)."""
        checkpoint = torch.load(filename, map_location=torch.device("cpu"), weights_only=True)
        if not isinstance(checkpoint, dict):
            raise ValueError(
                f"Checkpoint {filename} holds a {type(checkpoint).__name__}, not a dict"
            )
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

    def _log_incompatible_keys(self, incompatible: _IncompatibleKeys) -> None:
        if incompatible.incorrect_shapes:
            lines = "\n".join(
                f"  {key}: checkpoint {tuple(shape_ckpt)} vs model {tuple(shape_model)}"
                for key, shape_ckpt, shape_model in incompatible.incorrect_shapes
            )
            self.logger.warning(
                "Skipped %d tensor(s) whose shape in the checkpoint differs from the model "
                "(they keep their current values):\n%s",
                len(incompatible.incorrect_shapes),
                lines,
            )
        missing = _filter_reused_missing_keys(self.model, incompatible.missing_keys)
        if missing:
            self.logger.warning(
                "%d model parameter(s) / buffer(s) not found in the checkpoint:\n  %s",
                len(missing),
                "\n  ".join(sorted(missing)),
            )
        if incompatible.unexpected_keys:
            self.logger.warning(
                "%d checkpoint entr(y/ies) not used by the model:\n  %s",
                len(incompatible.unexpected_keys),
                "\n  ".join(sorted(incompatible.unexpected_keys)),
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
