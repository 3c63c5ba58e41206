#!/usr/bin/env python
"""Train and evaluate a uper_parsing model from a YAML config.

    python train_net.py --config-file configs/quickstart/upernet_R18_synthetic.yaml
    python train_net.py --config-file configs/ade20k/upernet_R50_bs16_160k.yaml --num-gpus 8
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    python train_net.py --config-file ... --resume            # continue from last_checkpoint
    torchrun --nproc_per_node 8 train_net.py --config-file ...  # also works

Writes to OUTPUT_DIR: config.yaml, log.txt, metrics.json, TensorBoard events, checkpoints,
results.json ({task: {metric: value}}) and pictures of predictions on val images in vis/. With
MODEL.MULTITASK.TEXTURE_PHASE_ITERS > 0 the first phase of the texture schedule writes its own
files to OUTPUT_DIR/first_phase, and OUTPUT_DIR holds those of the complete model.

SIGTERM or SIGUSR1 (what schedulers send before killing a job) stops training after an iteration
every process agrees on, saves it as OUTPUT_DIR/model_<iter>.pth (named by last_checkpoint) and
exits with status PREEMPTED_EXIT_CODE (75, EX_TEMPFAIL); --resume continues at the next iteration.

The logic lives in ``uper_parsing.cli.train``; ``pip install .`` also installs it as the
``uper-train`` command.
"""

from uper_parsing.cli.train import invoke_main, main, setup

__all__ = ["invoke_main", "main", "setup"]

if __name__ == "__main__":
    invoke_main()
