"""Train and evaluate a uper_parsing model from a YAML config: the ``uper-train`` command, which
``python train_net.py`` runs as well (both call :func:`invoke_main`).

    uper-train --config-file configs/quickstart/upernet_R18_synthetic.yaml
    uper-train --config-file configs/ade20k/upernet_R50_bs16_160k.yaml --num-gpus 8
    uper-train --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    uper-train --config-file ... --resume            # continue from last_checkpoint
    torchrun --nproc_per_node 8 train_net.py --config-file ...  # also works

Writes to OUTPUT_DIR: config.yaml, log.txt, metrics.json, TensorBoard events, checkpoints,
results.json ({task: {metric: value}}) and pictures of predictions on val images in vis/. With
MODEL.MULTITASK.TEXTURE_PHASE_ITERS > 0 the first phase of the texture schedule writes its own
files to OUTPUT_DIR/first_phase, and OUTPUT_DIR holds those of the complete model.

SIGTERM or SIGUSR1 (what schedulers send before killing a job) stops training after an iteration
every process agrees on, saves it as OUTPUT_DIR/model_<iter>.pth (named by last_checkpoint) and
exits with status PREEMPTED_EXIT_CODE (75, EX_TEMPFAIL); --resume continues at the next iteration.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ..checkpoint import Checkpointer
from ..config import CfgNode, get_cfg
from ..engine import (
    PREEMPTED_EXIT_CODE,
    DefaultTrainer,
    TrainingPreempted,
    default_argument_parser,
    default_setup,
    launch,
    train_model,
    write_results,
)
from ..engine.predictor import write_prediction_pictures
from ..modeling import prepare_for_inference
from ..utils import comm

logger = logging.getLogger("uper_parsing")


def setup(args: argparse.Namespace) -> CfgNode:
    """Defaults, then the config file, then command-line overrides; frozen."""
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def main(args: argparse.Namespace) -> dict:
    """One process's run: train (or, with ``--eval-only``, evaluate ``MODEL.WEIGHTS``), then
    write pictures of predictions on the test sets. Returns the evaluation results."""
    cfg = setup(args)
    if args.eval_only:
        model = DefaultTrainer.build_model(cfg)
        checkpointer = Checkpointer(
            model,
            cfg.OUTPUT_DIR,
            partial=cfg.MODEL.WEIGHTS_PARTIAL,
            weights_format=cfg.MODEL.WEIGHTS_FORMAT,
        )
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        prepare_for_inference(model, cfg)
        results = DefaultTrainer.test(cfg, model)
        if comm.is_main_process():
            write_results(results, os.path.join(cfg.OUTPUT_DIR, "results.json"))
    else:
        results, model = train_model(cfg, resume=args.resume)
    if comm.is_main_process() and cfg.TEST.VIS_NUM_IMAGES > 0:
        for dataset_name in cfg.DATASETS.TEST:
            paths = write_prediction_pictures(
                cfg, model, dataset_name, os.path.join(cfg.OUTPUT_DIR, "vis")
            )
            logger.info("Wrote %d pictures of predictions on %s", len(paths), dataset_name)
    return results


def invoke_main(argv: list[str] | None = None) -> None:
    """Parse the command line (``argv``, default ``sys.argv[1:]``) and run :func:`main` on each
    process ``launch`` starts; a preempted run exits with ``PREEMPTED_EXIT_CODE``."""
    args = default_argument_parser().parse_args(argv)
    try:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except TrainingPreempted as stop:
        logger.warning("%s; exiting with status %d", stop, PREEMPTED_EXIT_CODE)
        sys.exit(PREEMPTED_EXIT_CODE)
