"""Checkpoints with detectron2's names, written atomically, loaded without silent losses.

``Checkpointer`` is fvcore's (``module.`` prefixes stripped, ``resume_or_load``) with these changes:

- every file is written to ``<name>.tmp``, fsynced and renamed, so a run killed while saving leaves
  the previous checkpoint and ``last_checkpoint`` intact; a failed write is an OSError naming the
  file; only the main process writes by default;
- resuming skips a damaged checkpoint (missing, truncated, corrupt, without "model"), naming it in
  a warning, for the newest good one in ``save_dir`` (``checkpoint.inventory``);
- loading reports every missing, unexpected and shape-mismatched tensor grouped by module, and a
  shape mismatch is an error unless ``partial=True`` (``MODEL.WEIGHTS_PARTIAL``);
- files of other codebases (detectron2 and Caffe2, mmseg, transformers' UperNet, CSAIL, timm,
  torchvision) are recognised by their key names, or named by ``weights_format``
  (``MODEL.WEIGHTS_FORMAT``), and converted on load (``checkpoint.formats``); a backbone alone is
  loaded into the model's backbone;
- paths, ``file://``, ``https://`` (downloaded once into a cache), ``detectron2://`` and
  ``open-mmlab://`` URLs are accepted (``checkpoint.paths``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import torch
from fvcore.common.checkpoint import Checkpointer as _FvcoreCheckpointer
from fvcore.common.checkpoint import PeriodicCheckpointer as _FvcorePeriodicCheckpointer
from torch import nn

from ..utils import comm
from .atomic import atomic_write
from .formats import (
    choose_weights_format,
    convert_weights_file,
    place_state_dict,
    read_weights_file,
)
from .inventory import (
    checkpoint_problem,
    file_signature,
    periodic_checkpoint_files,
    resume_candidates,
)
from .metadata import CONFIG_KEY, METADATA_KEY
from .paths import register_url_handlers
from .report import format_key_groups, format_shape_mismatches, shape_mismatches

__all__ = ["Checkpointer", "PeriodicCheckpointer"]

LAST_CHECKPOINT = "last_checkpoint"  # file in save_dir naming the newest checkpoint


class IncompatibleKeys(NamedTuple):
    """What loading a checkpoint into a model left out (fvcore's ``Checkpointer.load`` passes
    the value ``_load_model`` returns to ``_log_incompatible_keys``)."""

    missing_keys: list[str]
    unexpected_keys: list[str]
    incorrect_shapes: list[tuple[str, tuple[int, ...], tuple[int, ...]]]


def loaded_under_another_name(model: nn.Module, missing_keys: Sequence[str]) -> set[str]:
    """The ``missing_keys`` whose tensor the model also holds under a name that is not missing
    (a module shared by two parents, tied weights): it was loaded through that name."""
    missing = set(missing_keys)
    names: dict[int, list[str]] = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        tensors = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        for name, tensor in tensors:
            names.setdefault(id(tensor), []).append(f"{prefix}.{name}" if prefix else name)
    loaded = set()
    for aliases in names.values():
        if any(alias not in missing for alias in aliases):
            loaded.update(alias for alias in aliases if alias in missing)
    return loaded


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
        weights_format: str = "auto",
        metadata: dict[str, Any] | None = None,
        config: str | None = None,
        **checkpointables: Any,
    ) -> None:
        """
        Args:
            save_to_disk: whether ``save`` writes files; defaults to "this is the main process".
            partial: load checkpoints whose tensors differ in shape from the model's (those
                keep their current values, with a warning); False raises on such tensors.
            weights_format: what ``load`` reads (``MODEL.WEIGHTS_FORMAT``): "auto" (recognised
                by the file's record and key names) or a name of ``checkpoint.WEIGHTS_FORMATS``.
                Resuming reads this class's own files, whatever the setting.
            metadata: plain class lists written into every checkpoint as its "metadata" entry
                (``read_checkpoint_metadata``; a task record's ``stored_metadata``), so that the
                model can be run and drawn without its datasets. None: the metadata of the
                checkpoint ``load`` reads, when it stores one (kept for the next saves).
            config: the run's full config as YAML text (``cfg.dump()``), written into every
                checkpoint as its "config" entry (``read_checkpoint_config``), so that the
                model can be built from the checkpoint alone (``engine.Predictor``).
            checkpointables: objects with ``state_dict()`` / ``load_state_dict()``.
        """
        if save_to_disk is None:
            save_to_disk = comm.is_main_process()
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.logger = logging.getLogger(__name__)
        self.partial = partial
        self.weights_format = weights_format
        self.metadata = metadata
        self.config = config
        self._verdicts: dict[str, tuple[tuple[int, int] | None, str | None]] = {}
        register_url_handlers(self.path_manager)

    def save(self, name: str, *, tag: bool = True, **kwargs: Any) -> None:
        """Write ``{"model", <checkpointables>, **kwargs}`` to ``save_dir/<name>.pth`` atomically
        and then (``tag``) point ``last_checkpoint`` at it; ``tag=False`` for a file that is not
        the one to resume from, such as ``model_best``.

        Raises:
            OSError naming the file when writing fails (a full disk ...); the files of
            ``save_dir`` are then as they were, ``last_checkpoint`` included.
        """
        if not self.save_dir or not self.save_to_disk:
            return
        data: dict[str, Any] = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        if self.metadata is not None:
            data[METADATA_KEY] = self.metadata
        if self.config is not None:
            data[CONFIG_KEY] = self.config
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        if os.path.basename(save_file) != basename:
            raise ValueError(f"Checkpoint name must be a plain file name, got {name!r}")
        self.logger.info("Saving checkpoint to %s", save_file)
        intact = "the previous checkpoint and last_checkpoint are intact"
        with _naming_failed_write(save_file, intact), atomic_write(save_file, "wb") as f:
            torch.save(data, f)
        if tag:
            self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        """Atomically record ``last_filename_basename`` as the newest checkpoint."""
        tag_file = os.path.join(self.save_dir, LAST_CHECKPOINT)
        unchanged = "it still names the previous checkpoint"
        with _naming_failed_write(tag_file, unchanged), atomic_write(tag_file, "w") as f:
            f.write(last_filename_basename)

    def tagged_checkpoint_file(self) -> str:
        """The path ``save_dir/last_checkpoint`` names, good or not; "" without that file."""
        try:
            with open(os.path.join(self.save_dir, LAST_CHECKPOINT), encoding="utf-8") as f:
                return os.path.join(self.save_dir, f.read().strip())
        except OSError:
            return ""

    def has_checkpoint(self) -> bool:
        """Whether there is a good checkpoint to resume from (``get_checkpoint_file``)."""
        return bool(self.get_checkpoint_file())

    def get_checkpoint_file(self) -> str:
        """The checkpoint to resume from: the one ``last_checkpoint`` names when it is good,
        else the newest good one in ``save_dir`` (``model_final.pth``, then ``model_*.pth`` by
        iteration); "" without ``last_checkpoint`` or a good checkpoint. A bad file is named in
        a warning (once while it stays as it is)."""
        tagged = self.tagged_checkpoint_file()
        if not tagged or self._is_good(tagged, tagged=True):
            return tagged
        for candidate in resume_candidates(self.save_dir):
            if candidate != tagged and self._is_good(candidate, tagged=False):
                return candidate
        return ""

    def resume_or_load(self, path: str, *, resume: bool = True) -> dict[str, Any]:
        """Resume from ``save_dir``'s newest good checkpoint (model and checkpointables) when
        ``resume`` and there is one (``get_checkpoint_file``), else load the model only from
        ``path`` ("" = none), with a warning when ``last_checkpoint`` exists."""
        if not resume:
            return self.load(path, checkpointables=[])
        tagged, resume_file = self.tagged_checkpoint_file(), self.get_checkpoint_file()
        if resume_file:
            if resume_file != tagged:
                self.logger.warning(
                    "Resuming from %s, the newest good checkpoint, instead of %s",
                    resume_file,
                    tagged,
                )
            with self._reading("ours"):
                return self.load(resume_file)
        if tagged:
            self.logger.warning(
                "Found no good checkpoint in %s to resume from: %s",
                self.save_dir,
                f"loading the model from {path} instead" if path else "starting from scratch",
            )
        return self.load(path, checkpointables=[])

    def _is_good(self, path: str, *, tagged: bool) -> bool:
        """Whether ``path`` can be resumed from (``checkpoint_problem``); warns about a bad file
        once while its size and modification time stay the same."""
        signature = file_signature(path)
        known = self._verdicts.get(path)
        if known is not None and known[0] == signature:
            return known[1] is None
        problem = checkpoint_problem(path)
        self._verdicts[path] = (signature, problem)
        if problem is not None:
            named = f" (named by {LAST_CHECKPOINT})" if tagged else ""
            self.logger.warning("Cannot resume from %s%s: it %s", path, named, problem)
        return problem is None

    @contextlib.contextmanager
    def _reading(self, weights_format: str) -> Iterator[None]:
        saved, self.weights_format = self.weights_format, weights_format
        try:
            yield
        finally:
            self.weights_format = saved

    def load(self, path: str, checkpointables: list[str] | None = None) -> dict[str, Any]:
        """fvcore's ``load``; returns the checkpoint's other entries (``iteration``, ``metadata``,
        ``config`` ...). A checkpointer without metadata keeps the loaded one for its saves."""
        extra = super().load(path, checkpointables=checkpointables)
        if self.metadata is None and isinstance(extra.get(METADATA_KEY), dict):
            self.metadata = extra[METADATA_KEY]
        return extra

    def _load_file(self, filename: str) -> dict[str, Any]:
        """Read a checkpoint as ``{"model": state dict with this project's names, ...}``: this
        class's own files (with their other entries) or any format of ``checkpoint.formats``,
        converted (a foreign file's training state is left out). A backbone alone is placed
        where the model holds its backbone."""
        file = read_weights_file(filename)
        name = choose_weights_format(file, self.weights_format, target_keys=self.model.state_dict())
        conversion = convert_weights_file(file, name)
        state = conversion.state_dict
        if conversion.kind != "model" or (name == "ours" and file.source is None):
            state = self._placed(state, filename)
        if name == "ours":
            return {**file.extra, "model": state}
        self.logger.info("Converted %s: %s", filename, conversion.summary())
        if file.extra:
            self.logger.info(
                "%s is a %s checkpoint: using its model only, not %s",
                filename,
                name,
                ", ".join(sorted(map(str, file.extra))),
            )
        return {"model": state, "__author__": conversion.author}

    def _placed(self, state: dict[str, Any], filename: str) -> dict[str, Any]:
        """``state`` moved to where its keys fit the model (e.g. a bare ResNet under
        ``backbone.bottom_up.``); unchanged when they fit as they are or nowhere. Keys outside
        the part that fits stay as they are (the load reports them)."""
        placement = place_state_dict(state, self.model.state_dict())
        if placement is None or not (placement.strip or placement.add):
            return state
        part = f"its {placement.strip.rstrip('.')} part" if placement.strip else "it"
        self.logger.info(
            "%s holds part of a model only: loading %s into %s (the rest keeps its initial values)",
            filename,
            part,
            placement.add.rstrip(".") or "the model",
        )
        return placement.apply(state, keep_outside=True)

    def _load_model(self, checkpoint: dict[str, Any]) -> IncompatibleKeys:
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
        return IncompatibleKeys(
            missing_keys=result.missing_keys,
            unexpected_keys=result.unexpected_keys,
            incorrect_shapes=mismatched,
        )

    def _log_incompatible_keys(self, incompatible: IncompatibleKeys) -> None:
        """Warn about every tensor not loaded, grouped by module (BN counters left out)."""
        skipped = {key for key, _, _ in incompatible.incorrect_shapes}
        loaded_elsewhere = loaded_under_another_name(self.model, incompatible.missing_keys)
        missing = [  # in the model's order
            k
            for k in incompatible.missing_keys
            if k not in loaded_elsewhere
            and k not in skipped
            and not k.endswith("num_batches_tracked")
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


class PeriodicCheckpointer(_FvcorePeriodicCheckpointer):
    """Save ``model_{iteration:07d}`` after every ``period``-th iteration and ``model_final``
    after iteration ``max_iter - 1`` (each with ``iteration`` stored). ``period <= 0`` saves
    only ``model_final``.

    ``max_to_keep`` N > 0 (``SOLVER.CHECKPOINT_KEEP``) keeps the N newest periodic checkpoints of
    the folder by iteration, earlier runs' included, deleting older ones after each successful
    save; ``model_final`` and the file ``last_checkpoint`` names are never deleted. None or 0
    keeps all. (fvcore's own rule deletes only what this object saved, so a resumed run would
    leave its predecessor's files behind.)
    """

    def __init__(
        self,
        checkpointer: Checkpointer,
        period: int,
        max_iter: int | None = None,
        max_to_keep: int | None = None,
        file_prefix: str = "model",
    ) -> None:
        super().__init__(checkpointer, period, max_iter, None, file_prefix)
        self.keep = int(max_to_keep or 0)
        if self.keep < 0:
            raise ValueError(f"max_to_keep (SOLVER.CHECKPOINT_KEEP) must be >= 0, got {self.keep}")

    def step(self, iteration: int, **kwargs: Any) -> None:
        iteration = int(iteration)
        state = {"iteration": iteration, **kwargs}
        if self.period > 0 and (iteration + 1) % self.period == 0:
            self.checkpointer.save(f"{self.file_prefix}_{iteration:07d}", **state)
            self.delete_old_checkpoints()
        if self.max_iter is not None and iteration >= self.max_iter - 1:
            self.checkpointer.save(f"{self.file_prefix}_final", **state)

    def delete_old_checkpoints(self) -> None:
        """Delete the periodic checkpoints older than the ``keep`` newest (none when 0), except
        the one ``last_checkpoint`` names."""
        checkpointer = self.checkpointer
        if self.keep <= 0 or not checkpointer.save_dir or not checkpointer.save_to_disk:
            return
        tagged = checkpointer.tagged_checkpoint_file()
        for path in periodic_checkpoint_files(checkpointer.save_dir, self.file_prefix)[
            : -self.keep
        ]:
            if path != tagged:
                checkpointer.logger.info("Deleting %s (keeping the newest %d)", path, self.keep)
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)


@contextlib.contextmanager
def _naming_failed_write(path: str, consequence: str) -> Iterator[None]:
    """Turn a failed write of ``path`` into an OSError naming it, followed by ``consequence``
    (what the failure left as it was). torch's zip writer reports a failed write (a full disk
    ...) as a RuntimeError of its own, with the OSError as its context."""
    try:
        yield
    except (OSError, RuntimeError) as error:
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__context__
        if cause is None:
            raise
        message = f"Could not write {path} ({cause.strerror or cause}); {consequence}"
        raise (
            OSError(message) if cause.errno is None else OSError(cause.errno, message)
        ) from error
