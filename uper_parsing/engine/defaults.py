"""The standard pieces a training script is made of: argument parser, set-up, DefaultTrainer.

``uper_parsing/cli/train.py`` (what ``train_net.py`` and ``uper-train`` run) is the training
script built on them: ``setup(args)``, then either ``--eval-only`` (``build_model``, a
``Checkpointer`` loading ``MODEL.WEIGHTS``, ``prepare_for_inference``, ``DefaultTrainer.test``,
``write_results``) or ``DefaultTrainer(cfg)``, ``resume_or_load`` and ``train()``, all under
``launch(main, args.num_gpus, args.num_machines, args.machine_rank, args.dist_url, ...)``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import Checkpointer, atomic_write
from ..solver import build_gradient_clipper
from ..solver import build_lr_scheduler as _build_lr_scheduler
from ..solver import build_optimizer as _build_optimizer
from ..utils import comm
from ..utils.env import collect_env_info, seed_all_rng, usable_device
from ..utils.events import CommonMetricPrinter, EventWriter, JSONWriter, TensorboardXWriter
from ..utils.logger import setup_logger
from . import hooks
from .train_loop import AMPTrainer, SimpleTrainer, TrainerBase, TrainingPreempted

__all__ = [
    "default_argument_parser",
    "default_setup",
    "default_writers",
    "resolve_device",
    "create_ddp_model",
    "ddp_options",
    "write_results",
    "DefaultTrainer",
]

logger = logging.getLogger(__name__)

_AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def default_argument_parser(epilog: str | None = None) -> argparse.ArgumentParser:
    """The command line every script shares: config file, resume / eval-only, the process layout,
    and trailing ``KEY VALUE`` config overrides."""
    parser = argparse.ArgumentParser(
        epilog=epilog
        or (
            "Examples:\n"
            "  Train on 8 GPUs:  train_net.py --num-gpus 8 --config-file cfg.yaml\n"
            "  Change configs:   train_net.py --config-file cfg.yaml SOLVER.BASE_LR 0.001\n"
            "  Evaluate:         train_net.py --config-file cfg.yaml --eval-only "
            "MODEL.WEIGHTS model_final.pth\n"
            "  Two machines:     (machine0)$ train_net.py --machine-rank 0 --num-machines 2 "
            "--dist-url <URL> [--other-flags]\n"
            "                    (machine1)$ train_net.py --machine-rank 1 --num-machines 2 "
            "--dist-url <URL> [--other-flags]"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUTPUT_DIR/last_checkpoint if it exists (else load MODEL.WEIGHTS)",
    )
    parser.add_argument("--eval-only", action="store_true", help="only evaluate MODEL.WEIGHTS")
    parser.add_argument("--num-gpus", type=int, default=1, help="processes (GPUs) per machine")
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument(
        "--machine-rank", type=int, default=0, help="the rank of this machine (unique per machine)"
    )
    # A port derived from the user id, so that different users' jobs on one machine do not clash.
    uid = os.getuid() if hasattr(os, "getuid") else 1
    port = 2**15 + 2**14 + hash(uid) % 2**14
    parser.add_argument(
        "--dist-url",
        default=f"tcp://127.0.0.1:{port}",
        help="initialization URL for torch.distributed ('auto': a free local port)",
    )
    parser.add_argument(
        "opts",
        help="config overrides as KEY VALUE pairs, e.g. SOLVER.BASE_LR 0.01",
        default=None,
        nargs=argparse.REMAINDER,
    )
    return parser


def _set_cfg(cfg: Any, key: str, value: Any) -> None:
    """Set dotted ``key`` of ``cfg`` even when cfg is frozen (re-freezing it)."""
    was_frozen = cfg.is_frozen()
    cfg.defrost()
    node = cfg
    *parents, leaf = key.split(".")
    for name in parents:
        node = node[name]
    node[leaf] = value
    if was_frozen:
        cfg.freeze()


def resolve_device(cfg: Any) -> str:
    """``MODEL.DEVICE`` if usable; a CUDA device without CUDA becomes "cpu" (with a warning, and
    written back into cfg). Returns the device."""
    device = usable_device(cfg.MODEL.DEVICE)
    if device != cfg.MODEL.DEVICE:
        _set_cfg(cfg, "MODEL.DEVICE", device)
    return device


def default_setup(cfg: Any, args: argparse.Namespace) -> None:
    """Per-process set-up at the start of a job.

    1. create ``OUTPUT_DIR`` and set up the ``uper_parsing`` logger (``OUTPUT_DIR/log.txt``);
    2. log the environment, the command line, the config file and the full config;
    3. write the config to ``OUTPUT_DIR/config.yaml`` (main process; as requested, before the
       device fallback below);
    4. :func:`resolve_device`;
    5. seed every RNG with ``SEED + rank`` (``SEED < 0``: a random seed shared by all processes,
       logged so the run can be repeated);
    6. ``torch.backends.cudnn.benchmark = CUDNN_BENCHMARK`` (training only);
    7. register the datasets declared in ``DATASETS.REGISTER`` (``data.register_declared``);
    8. fill the model config values the datasets' metadata decides that are still unset (the
       task record's, ``tasks.configure_model``: a parser's class counts); the trainer checks
       the set ones against its training sets.
    """
    output_dir = cfg.OUTPUT_DIR
    rank = comm.get_rank()
    if comm.is_main_process() and output_dir:
        os.makedirs(output_dir, exist_ok=True)
    setup_logger(output_dir, distributed_rank=rank, name="uper_parsing")

    logger.info("Rank of current process: %d. World size: %d", rank, comm.get_world_size())
    logger.info("Environment info:\n%s", collect_env_info())
    logger.info("Command line arguments: %s", args)
    config_file = getattr(args, "config_file", "")
    if config_file:
        with open(config_file, encoding="utf-8") as f:
            logger.info("Contents of args.config_file=%s:\n%s", config_file, f.read())
    logger.info("Running with full config:\n%s", cfg.dump())
    if comm.is_main_process() and output_dir:
        path = os.path.join(output_dir, "config.yaml")
        with atomic_write(path, "w") as f:
            f.write(cfg.dump())
        logger.info("Full config saved to %s", path)

    resolve_device(cfg)

    if cfg.SEED >= 0:
        seed = int(cfg.SEED)
    else:
        seed = comm.shared_random_seed()
        logger.info("SEED < 0: using random seed %d (set SEED %d to repeat this run)", seed, seed)
    used = seed_all_rng(seed + rank)
    logger.info("Seeded the RNGs of rank %d with %d", rank, used)

    if not getattr(args, "eval_only", False):
        torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK
    _register_declared(cfg)
    _configure_model(cfg, check=False)


def default_writers(output_dir: str, max_iter: int | None = None) -> list[EventWriter]:
    """Console summary, ``output_dir/metrics.json`` and TensorBoard events in ``output_dir``."""
    os.makedirs(output_dir, exist_ok=True)
    return [
        CommonMetricPrinter(max_iter),
        JSONWriter(os.path.join(output_dir, "metrics.json")),
        TensorboardXWriter(output_dir),
    ]


def _configure_model(cfg: Any, *, check: bool = True) -> Any:
    """``tasks.configure_model`` (imported when first needed, as the loader builders are):
    the model config values the datasets' metadata decides, checked or filled. Returns the
    task family (None when none is known)."""
    from ..tasks import configure_model

    return configure_model(cfg, check=check)


def _checkpoint_metadata(cfg: Any, family: Any) -> dict[str, Any] | None:
    """What the trainer's checkpoints store of ``DATASETS.TRAIN[0]``'s metadata: the task
    record's ``metadata_keys`` (class names, colours, id maps, ignore label), None when the
    family is unknown or the dataset holds no class lists."""
    from ..data import MetadataCatalog

    if family is None or not cfg.DATASETS.TRAIN:
        return None
    metadata = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
    return family.stored_metadata(metadata) if family.has_metadata(metadata) else None


def _register_declared(cfg: Any) -> None:
    """Register the dataset declaration files of ``DATASETS.REGISTER`` (again: nothing happens)
    with ``data.datasets.register_declared_datasets`` (imported when first needed)."""
    from ..data.datasets import register_declared_datasets

    register_declared_datasets(cfg)


def _check_datasets(cfg: Any) -> None:
    """``data.check.check_on_start`` (``DATASETS.CHECK_ON_START``), imported when first needed
    as the loader builders are."""
    from ..data.check import check_on_start

    check_on_start(cfg)


def _train_stream(loader: Any) -> Any:
    """``data.train_stream`` (imported when first needed, as the loader builders are)."""
    from ..data import train_stream as stream_of

    return stream_of(loader)


class _StreamState:
    """Checkpoint entry ``data_stream``: the training stream's seed and layout
    (``TrainStream.state_dict``; empty for another loader). Loading only keeps the state for
    ``DefaultTrainer.resume_or_load``, which knows the iteration to continue at."""

    def __init__(self, loader: Callable[[], Any]) -> None:
        self._loader = loader
        self.loaded: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        stream = _train_stream(self._loader())
        return stream.state_dict() if stream is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loaded = dict(state)


def ddp_options(cfg: Any, model: nn.Module) -> dict[str, Any]:
    """The keyword arguments of :func:`create_ddp_model` that ``cfg.DDP`` sets, checked against
    ``model`` (also with one process, so that a config fails before it reaches several)."""
    ddp = cfg.DDP
    if not ddp.BUCKET_CAP_MB > 0:
        raise ValueError(f"DDP.BUCKET_CAP_MB must be > 0 (MiB), got {ddp.BUCKET_CAP_MB}")
    if ddp.STATIC_GRAPH and getattr(model, "find_unused_parameters", False):
        raise ValueError(
            f"DDP.STATIC_GRAPH is True but {type(model).__name__} trains different parameters "
            "from batch to batch (it needs find_unused_parameters); set DDP.STATIC_GRAPH False"
        )
    return {
        "bucket_cap_mb": ddp.BUCKET_CAP_MB,
        "gradient_as_bucket_view": ddp.GRADIENT_AS_BUCKET_VIEW,
        "static_graph": ddp.STATIC_GRAPH,
        "fp16_compression": ddp.FP16_COMPRESSION,
    }


def create_ddp_model(
    model: nn.Module, *, fp16_compression: bool = False, **kwargs: Any
) -> nn.Module:
    """Wrap ``model`` in DistributedDataParallel when there is more than one process (CUDA: on
    the model's device; CPU: no device ids). ``find_unused_parameters`` defaults to the model's
    attribute of that name (False when absent); ``fp16_compression`` all-reduces gradients in
    float16 (torch's ``fp16_compress_hook``); other keyword arguments go to DDP
    (:func:`ddp_options` gives those of a config). Returns ``model`` itself otherwise."""
    if comm.get_world_size() == 1:
        return model
    if isinstance(model, DistributedDataParallel):
        return model
    device = next(model.parameters()).device
    kwargs.setdefault("device_ids", [device.index] if device.type == "cuda" else None)
    # a model whose batches train different heads (multi-task) declares it needs this
    kwargs.setdefault("find_unused_parameters", getattr(model, "find_unused_parameters", False))
    # Buffers (BN statistics) stay per process during training, as in detectron2; newer torch
    # renamed broadcast_buffers to forward_sync_buffers.
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        if "broadcast_buffers" not in kwargs:
            kwargs.setdefault("forward_sync_buffers", False)
    else:
        kwargs.setdefault("broadcast_buffers", False)
    ddp = DistributedDataParallel(model, **kwargs)
    if fp16_compression:
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        ddp.register_comm_hook(state=None, hook=default_hooks.fp16_compress_hook)
    return ddp


def _to_builtin(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _to_builtin(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_builtin(v) for v in obj]
    if isinstance(obj, torch.Tensor | np.ndarray | np.generic):
        return obj.tolist() if getattr(obj, "ndim", 0) else obj.item()
    return obj


def write_results(results: Mapping[str, Any], path: str) -> None:
    """Write ``{task: {metric: value}}`` to ``path`` as JSON, atomically, on the main process
    only (a no-op elsewhere, so every process may call it). NaN is written as ``NaN``."""
    if not comm.is_main_process():
        return
    with atomic_write(path, "w") as f:
        json.dump(_to_builtin(results), f, indent=2)
        f.write("\n")
    logger.info("Evaluation results written to %s", path)


def _merge_dataset_results(
    per_dataset: Mapping[str, Mapping[str, Any]],
) -> OrderedDict[str, Any]:
    """One dataset: its ``{task: metrics}``. Several: ``{"<dataset>/<task>": metrics}``."""
    merged: OrderedDict[str, Any] = OrderedDict()
    for dataset_name, results in per_dataset.items():
        for task, metrics in results.items():
            merged[task if len(per_dataset) == 1 else f"{dataset_name}/{task}"] = metrics
    return merged


def _log_results(results: Mapping[str, Any]) -> None:
    for task, metrics in results.items():
        logger.info("%s: %s", task, metrics)


class DefaultTrainer(TrainerBase):
    """Training with the standard behaviour, built from a config:

    - model (``build_model``, moved to ``MODEL.DEVICE``), optimizer, LR scheduler, train loader;
      DistributedDataParallel when there are several processes;
    - :class:`AMPTrainer` when ``SOLVER.AMP.ENABLED`` else :class:`SimpleTrainer`, with gradient
      clipping per ``SOLVER.CLIP_GRADIENTS``;
    - a :class:`Checkpointer` in ``OUTPUT_DIR`` saving model, optimizer, scheduler, grad scaler
      and iteration, the full config and the training set's metadata (what the task record
      needs to run and draw: ``engine.Predictor.from_checkpoint`` reads them);
    - first, the datasets of ``DATASETS.REGISTER`` registered, the datasets' files checked
      (``DATASETS.CHECK_ON_START``, ``data.check``) and the model config values the task record
      derives from the datasets' metadata filled where unset (``tasks.configure_model``);
    - the training loader of the task record (``TaskFamily.build_train_loader``), once the model
      config is checked against the training sets' metadata (class counts, the mapper);
    - hooks: StopOnSignal, IterationTimer, LRScheduler, PeriodicCheckpointer (main process),
      EvalHook (``TEST.EVAL_PERIOD``; 0 = only at the end), BestCheckpointer (with
      ``TEST.BEST_CHECKPOINT.METRIC``; main process), SkippedSamples (with
      ``DATALOADER.SKIP_BAD_SAMPLES``), PeriodicWriter (console, ``metrics.json``, TensorBoard;
      main process);
    - a stop request (SIGTERM / SIGUSR1, or :meth:`request_stop`) ends training after an
      iteration every process agrees on, saves it as a periodic checkpoint would be
      (``model_{iter:07d}.pth``, tagged ``last_checkpoint``) and raises
      :class:`TrainingPreempted`; ``--resume`` continues at the next iteration.

    Override the ``build_*`` classmethods to change a piece::

        trainer = DefaultTrainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        results = trainer.train()  # also written to OUTPUT_DIR/results.json
    """

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        if not logging.getLogger("uper_parsing").isEnabledFor(logging.INFO):
            setup_logger()
        resolve_device(cfg)
        _register_declared(cfg)
        _check_datasets(cfg)
        family = _configure_model(cfg, check=False)
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, **ddp_options(cfg, model))

        grad_clip = build_gradient_clipper(cfg)
        if cfg.SOLVER.AMP.ENABLED:
            dtype = cfg.SOLVER.AMP.DTYPE
            if dtype not in _AMP_DTYPES:
                raise ValueError(
                    f"SOLVER.AMP.DTYPE must be one of {list(_AMP_DTYPES)}, got {dtype}"
                )
            self._trainer: SimpleTrainer = AMPTrainer(
                model,
                data_loader,
                optimizer,
                grad_clip=grad_clip,
                log_period=cfg.SOLVER.LOG_PERIOD,
                precision=_AMP_DTYPES[dtype],
            )
        else:
            self._trainer = SimpleTrainer(
                model, data_loader, optimizer, grad_clip=grad_clip, log_period=cfg.SOLVER.LOG_PERIOD
            )

        # every process reads the losses before a checkpoint is saved (a diverged model raises)
        self._trainer.read_periods = (cfg.SOLVER.LOG_PERIOD, cfg.SOLVER.CHECKPOINT_PERIOD)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        stream = _train_stream(data_loader)
        self._trainer.step_seed = stream.seed if stream is not None else None
        self._stream_state = _StreamState(lambda: self.data_loader)
        checkpointables: dict[str, Any] = {
            "optimizer": optimizer,
            "scheduler": self.scheduler,
            "data_stream": self._stream_state,
        }
        grad_scaler = getattr(self._trainer, "grad_scaler", None)
        if grad_scaler is not None:
            checkpointables["grad_scaler"] = grad_scaler
        self.checkpointer = Checkpointer(
            model,
            cfg.OUTPUT_DIR,
            partial=cfg.MODEL.WEIGHTS_PARTIAL,
            weights_format=cfg.MODEL.WEIGHTS_FORMAT,
            metadata=_checkpoint_metadata(cfg, family),
            config=cfg.dump(),
            **checkpointables,
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self._last_eval_results: OrderedDict[str, Any] = OrderedDict()
        self.register_hooks(self.build_hooks())

    @property
    def model(self) -> nn.Module:
        """The trained model (wrapped in DistributedDataParallel with several processes)."""
        return self._trainer.model

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self._trainer.optimizer

    @property
    def data_loader(self) -> Any:
        return self._trainer.data_loader

    @data_loader.setter
    def data_loader(self, data_loader: Any) -> None:
        """Train on another iterable of batches from the next step on (benchmarks)."""
        self._trainer.data_loader = data_loader

    def resume_or_load(self, resume: bool = True) -> None:
        """With ``resume`` and a ``last_checkpoint`` in OUTPUT_DIR: load everything from it and
        continue at its iteration + 1. Otherwise load ``MODEL.WEIGHTS`` (model only; none when
        empty) and start at iteration 0."""
        checkpoint = self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            self.start_iter = int(checkpoint.get("iteration", -1)) + 1
            logger.info("Resuming training at iteration %d", self.start_iter)
            self._continue_stream()
        else:
            self.start_iter = 0

    def _continue_stream(self) -> None:
        """Continue the training stream where the checkpoint left it: its seed, from batch
        ``start_iter`` (one batch per iteration); a checkpoint without the stream's state, or of
        another batch size or process count, starts a fresh stream, with a warning."""
        stream = _train_stream(self.data_loader)
        if stream is None:
            return
        saved = self._stream_state.loaded
        if not saved:
            logger.warning(
                "The checkpoint holds no data-stream state: the training data starts over at "
                "iteration %d instead of continuing the interrupted run's",
                self.start_iter,
            )
            return
        layout = {"batch_size": stream.batch_size, "world_size": stream.world_size}
        saved_layout = {k: saved.get(k) for k in layout}
        if saved_layout != layout:
            logger.warning(
                "The checkpoint's data stream was read as %s, this run reads it as %s: the "
                "training data starts a fresh stream at iteration %d",
                saved_layout,
                layout,
                self.start_iter,
            )
            return
        stream.seed, stream.start = int(saved["seed"]), self.start_iter
        self._trainer.step_seed = stream.seed
        logger.info("The data stream continues at batch %d (seed %d)", stream.start, stream.seed)

    def build_hooks(self) -> list[hooks.HookBase | None]:
        """The default hooks, in the order they run (see the class docstring)."""
        cfg = self.cfg
        ret: list[hooks.HookBase | None] = [
            hooks.StopOnSignal(),
            hooks.IterationTimer(),
            hooks.LRScheduler(),
        ]
        if comm.is_main_process():
            ret.append(
                hooks.PeriodicCheckpointer(
                    self.checkpointer,
                    cfg.SOLVER.CHECKPOINT_PERIOD,
                    max_to_keep=cfg.SOLVER.CHECKPOINT_KEEP,
                )
            )

        def test_and_save_results() -> OrderedDict[str, Any]:
            self._last_eval_results = self.test(self.cfg, self.model)
            return self._last_eval_results

        ret.append(hooks.EvalHook(cfg.TEST.EVAL_PERIOD, test_and_save_results))
        best = cfg.TEST.BEST_CHECKPOINT
        if best.METRIC and comm.is_main_process():
            ret.append(
                hooks.BestCheckpointer(
                    cfg.TEST.EVAL_PERIOD, self.checkpointer, best.METRIC, mode=best.MODE
                )
            )
        if cfg.DATALOADER.SKIP_BAD_SAMPLES:
            ret.append(hooks.SkippedSamples())
        if comm.is_main_process():
            ret.append(hooks.PeriodicWriter(self.build_writers(), period=cfg.SOLVER.LOG_PERIOD))
        return ret

    def build_writers(self) -> list[EventWriter]:
        return default_writers(self.cfg.OUTPUT_DIR, self.max_iter)

    def train(self) -> OrderedDict[str, Any]:
        """Train from ``start_iter`` to ``SOLVER.MAX_ITER``. Returns the last evaluation results
        ``{task: {metric: value}}`` (empty on processes other than the main one), also written
        to ``OUTPUT_DIR/results.json`` by the main process.

        Raises:
            TrainingPreempted: on every process, when training stopped on request; the
                checkpoint of the last iteration is written before.
        """
        super().train(self.start_iter, self.max_iter)
        if self.stopped:
            raise TrainingPreempted(self.iter, self._save_stop_checkpoint())
        if comm.is_main_process():
            write_results(
                self._last_eval_results, os.path.join(self.cfg.OUTPUT_DIR, "results.json")
            )
        return self._last_eval_results

    def _save_stop_checkpoint(self) -> str:
        """Save iteration ``iter`` as the periodic checkpointer does (unless it just did) on the
        main process; every process waits for it, so none exits before it is written."""
        name = f"model_{self.iter:07d}"
        path = os.path.join(self.cfg.OUTPUT_DIR, f"{name}.pth")
        if comm.is_main_process() and self.checkpointer.tagged_checkpoint_file() != path:
            self.checkpointer.save(name, iteration=self.iter)
        comm.synchronize()
        return path

    def request_stop(self) -> None:
        super().request_stop()
        self._trainer.request_stop()  # whose loss gather tells every process

    def stop_agreed(self) -> bool:
        return self._trainer.stop_agreed()

    def flush_metrics(self) -> None:
        self._trainer.flush_metrics()

    def run_step(self) -> None:
        self._trainer.iter, self._trainer.max_iter = self.iter, self.max_iter
        self._trainer.run_step()

    @classmethod
    def build_model(cls, cfg: Any) -> nn.Module:
        """``modeling.build_model(cfg)``, on ``MODEL.DEVICE`` (cpu when CUDA is absent), with
        the config values still unset filled from the datasets' metadata first
        (``tasks.configure_model(cfg, check=False)``)."""
        from ..modeling import build_model

        _configure_model(cfg, check=False)
        return build_model(cfg)

    @classmethod
    def build_optimizer(cls, cfg: Any, model: nn.Module) -> torch.optim.Optimizer:
        return _build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(
        cls, cfg: Any, optimizer: torch.optim.Optimizer
    ) -> torch.optim.lr_scheduler.LRScheduler:
        return _build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg: Any) -> Any:
        """The task record's training loader (``TaskFamily.build_train_loader``; without a
        known family, ``data.build_train_loader``), after the record has checked the model
        config against the training sets' metadata (``tasks.configure_model``: class counts,
        the mapper), once, before anything is read."""
        family = _configure_model(cfg)
        if family is not None:
            return family.build_train_loader(cfg)
        from ..data import build_train_loader

        return build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg: Any, dataset_name: str) -> Any:
        from ..data import build_test_loader

        return build_test_loader(cfg, dataset_name)

    @classmethod
    def build_evaluator(cls, cfg: Any, dataset_name: str, output_folder: str | None = None) -> Any:
        """``evaluation.build_evaluator``; output in ``OUTPUT_DIR/inference/<dataset_name>``."""
        from ..evaluation import build_evaluator

        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def test(
        cls, cfg: Any, model: nn.Module, evaluators: Any | Sequence[Any] | None = None
    ) -> OrderedDict[str, Any]:
        """Evaluate ``model`` on every dataset of ``DATASETS.TEST``.

        Args:
            evaluators: one evaluator per test dataset (a single one for a single dataset);
                default: :meth:`build_evaluator` for each.

        Returns:
            ``{task: {metric: value}}``; with several test datasets the keys are
            ``"<dataset>/<task>"``. Empty on processes other than the main one.
        """
        from ..evaluation import inference_on_dataset

        try:
            from ..evaluation import print_csv_format
        except ImportError:
            print_csv_format = _log_results

        dataset_names = list(cfg.DATASETS.TEST)
        if evaluators is not None:
            if not isinstance(evaluators, list | tuple):
                evaluators = [evaluators]
            if len(evaluators) != len(dataset_names):
                raise ValueError(
                    f"{len(evaluators)} evaluators given for {len(dataset_names)} test datasets"
                )
        per_dataset: OrderedDict[str, Any] = OrderedDict()
        for idx, dataset_name in enumerate(dataset_names):
            data_loader = cls.build_test_loader(cfg, dataset_name)
            evaluator = (
                evaluators[idx]
                if evaluators is not None
                else cls.build_evaluator(cfg, dataset_name)
            )
            results = inference_on_dataset(model, data_loader, evaluator) or {}
            per_dataset[dataset_name] = results
            if comm.is_main_process():
                logger.info("Evaluation results for %s:", dataset_name)
                print_csv_format(results)
        return _merge_dataset_results(per_dataset)
