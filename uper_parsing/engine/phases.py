"""What a training command runs: one :class:`DefaultTrainer` run, or the UPerNet paper's texture
schedule in two.

With ``MODEL.MULTITASK.TEXTURE_PHASE_ITERS > 0`` (the paper trains the texture head after the
other tasks, with the rest of the network fixed):

1. first phase, in ``OUTPUT_DIR/first_phase``: a model without the texture head trains every
   other task for ``SOLVER.MAX_ITER`` iterations (texture crops are not drawn), unevaluated;
2. texture phase, in ``OUTPUT_DIR``: the complete model starts from the first phase's final
   weights, everything but the texture head frozen (``TEXTURE_TRAINING "second_phase"``), and
   trains on texture crops for ``TEXTURE_PHASE_ITERS`` iterations, at
   ``TEXTURE_PHASE_BASE_LR`` with the ``SOLVER`` schedule; its evaluations (``TEST.EVAL_PERIOD``
   and the final one), results.json, checkpoints and ``last_checkpoint`` are those of the
   complete model.

``resume``: a first phase that reached its ``SOLVER.MAX_ITER`` is not trained again, the texture
phase continues from ``OUTPUT_DIR/last_checkpoint``; a first phase that trains (again) is followed
by a texture phase from its new weights. Each phase re-seeds the RNGs (``SEED >= 0``), so a
texture phase started after a resume equals the one of an uninterrupted run.

A stop request (``TrainingPreempted``, raised by ``DefaultTrainer.train`` after saving) ends the
schedule where it is: a first phase stopped early is continued by ``resume`` and the texture phase
does not start before it has finished.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Any

from torch import nn

from ..checkpoint import Checkpointer, read_weights_file
from ..checkpoint.checkpointer import LAST_CHECKPOINT
from ..config import CfgNode
from ..modeling.meta_arch.build import META_ARCH_REGISTRY
from ..utils import comm
from ..utils.env import seed_all_rng
from .defaults import DefaultTrainer

__all__ = ["FIRST_PHASE_DIR", "first_phase_config", "texture_phase_config", "train_model"]

logger = logging.getLogger(__name__)

FIRST_PHASE_DIR = "first_phase"  # sub-folder of OUTPUT_DIR holding the first phase's files


def train_model(
    cfg: CfgNode, *, resume: bool, trainer_cls: type[DefaultTrainer] = DefaultTrainer
) -> tuple[OrderedDict[str, Any], nn.Module]:
    """Train as ``cfg`` says (see the module docstring). Returns the final evaluation results
    ``{task: {metric: value}}`` (also in ``OUTPUT_DIR/results.json``) and the trained model.

    Raises:
        TrainingPreempted: training stopped on request, in whichever phase ran.
    """
    if cfg.MODEL.MULTITASK.TEXTURE_PHASE_ITERS <= 0:
        trainer = trainer_cls(cfg)
        trainer.resume_or_load(resume=resume)
        return trainer.train(), trainer.model
    _check_two_phase_config(cfg)
    weights, trained = _train_first_phase(first_phase_config(cfg), resume, trainer_cls)
    # a first phase that trained now gives new weights: the texture phase starts over from them
    texture_cfg = texture_phase_config(cfg, weights)
    return _train_texture_phase(texture_cfg, resume and not trained, trainer_cls)


def first_phase_config(cfg: CfgNode) -> CfgNode:
    """``cfg`` without the texture task, in ``OUTPUT_DIR/first_phase``, as a single run without
    evaluation: the evaluator scores every task the test set labels (texture too), and the
    texture phase changes no output of the other tasks, so the final evaluation has their
    first-phase numbers."""
    return _derived(
        cfg,
        {
            "MODEL.MULTITASK.TASKS": [t for t in cfg.MODEL.MULTITASK.TASKS if t != "texture"],
            "MODEL.MULTITASK.TEXTURE_PHASE_ITERS": 0,
            "DATASETS.TEST": (),
            "OUTPUT_DIR": os.path.join(cfg.OUTPUT_DIR, FIRST_PHASE_DIR),
        },
    )


def texture_phase_config(cfg: CfgNode, weights: str) -> CfgNode:
    """``cfg`` training the texture head alone from ``weights``, as a single run of
    ``TEXTURE_PHASE_ITERS`` iterations at ``TEXTURE_PHASE_BASE_LR``."""
    multitask = cfg.MODEL.MULTITASK
    return _derived(
        cfg,
        {
            "MODEL.MULTITASK.TEXTURE_TRAINING": "second_phase",
            "MODEL.MULTITASK.TEXTURE_PHASE_ITERS": 0,
            "MODEL.WEIGHTS": weights,
            "SOLVER.MAX_ITER": multitask.TEXTURE_PHASE_ITERS,
            "SOLVER.BASE_LR": multitask.TEXTURE_PHASE_BASE_LR,
        },
    )


def _derived(cfg: CfgNode, changes: dict[str, Any]) -> CfgNode:
    derived = cfg.clone()
    derived.defrost()
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = derived
        for name in parents:
            node = node[name]
        node[leaf] = value
    derived.freeze()
    return derived


def _check_two_phase_config(cfg: CfgNode) -> None:
    multitask, arch = cfg.MODEL.MULTITASK, cfg.MODEL.META_ARCHITECTURE
    problems = []
    if not hasattr(META_ARCH_REGISTRY.get(arch), "freeze_all_but_texture"):
        problems.append(f"MODEL.META_ARCHITECTURE '{arch}' cannot train its texture head alone")
    if "texture" not in multitask.TASKS:
        problems.append(f"MODEL.MULTITASK.TASKS {list(multitask.TASKS)} has no 'texture'")
    if multitask.TEXTURE_TRAINING != "joint":
        problems.append(
            f"MODEL.MULTITASK.TEXTURE_TRAINING is '{multitask.TEXTURE_TRAINING}', not 'joint' "
            "(the schedule sets it per phase)"
        )
    if problems:
        raise ValueError(
            f"MODEL.MULTITASK.TEXTURE_PHASE_ITERS {multitask.TEXTURE_PHASE_ITERS} asks for a "
            "texture phase, but " + "; ".join(problems)
        )


def _seed(cfg: CfgNode) -> None:
    """The seeding of ``default_setup`` again (a random ``SEED < 0`` run keeps its RNG state)."""
    if cfg.SEED >= 0:
        seed_all_rng(cfg.SEED + comm.get_rank())


def _train_first_phase(
    cfg: CfgNode, resume: bool, trainer_cls: type[DefaultTrainer]
) -> tuple[str, bool]:
    """Returns the first phase's final checkpoint and whether it trained in this call."""
    last = _last_checkpoint(cfg.OUTPUT_DIR)
    if resume and last and _iterations_done(last) >= cfg.SOLVER.MAX_ITER:
        logger.info("First phase already trained (%s): not training it again", last)
        return last, False
    _seed(cfg)
    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=resume)
    logger.info("First phase (every task but texture) in %s", cfg.OUTPUT_DIR)
    trainer.train()
    comm.synchronize()  # the main process has written the final checkpoint
    return trainer.checkpointer.get_checkpoint_file(), True


def _last_checkpoint(output_dir: str) -> str | None:
    """The checkpoint ``--resume`` would continue in ``output_dir`` (the one ``last_checkpoint``
    names, or the newest good one when that is damaged), if any."""
    return Checkpointer(nn.Identity(), output_dir, save_to_disk=False).get_checkpoint_file() or None


def _iterations_done(checkpoint: str) -> int:
    """Iterations trained when ``checkpoint`` was saved (what ``resume`` continues after)."""
    return int(read_weights_file(checkpoint).extra.get("iteration", -1)) + 1


def _train_texture_phase(
    cfg: CfgNode, resume: bool, trainer_cls: type[DefaultTrainer]
) -> tuple[OrderedDict[str, Any], nn.Module]:
    """``resume`` False: start from ``MODEL.WEIGHTS``, forgetting any texture-phase checkpoint
    of an earlier first phase (so that a later resume cannot continue it)."""
    tag = os.path.join(cfg.OUTPUT_DIR, LAST_CHECKPOINT)
    if not resume and comm.is_main_process() and os.path.exists(tag):
        os.remove(tag)
    comm.synchronize()
    _seed(cfg)
    logger.info("Texture phase: a new texture head alone, the rest from %s", cfg.MODEL.WEIGHTS)
    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=resume)
    return trainer.train(), trainer.model
