#!/usr/bin/env python
"""Train and evaluate a uper_parsing model from a YAML config.

    python train_net.py --config-file configs/quickstart/upernet_R18_synthetic.yaml
    python train_net.py --config-file configs/ade20k/upernet_R50_bs16_160k.yaml --num-gpus 8
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    python train_net.py --config-file ... --resume            # continue from last_checkpoint
    torchrun --nproc_per_node 8 train_net.py --config-file ...  # also works

What it writes, and the rest of its options: ``uper_parsing.cli.train``, where the logic
lives (``pip install .`` also installs it as the ``uper-train`` command).
"""

from uper_parsing.cli.train import invoke_main, main, setup

__all__ = ["invoke_main", "main", "setup"]

if __name__ == "__main__":
    invoke_main()
