#!/usr/bin/env python
"""Run a trained model on images or a video and write pictures of its predictions.

    python demo.py --config-file configs/quickstart/upernet_R18_synthetic.yaml \
        --input path/to/images/ --output demo_out/ \
        MODEL.WEIGHTS output/quickstart/upernet_R18_synthetic/model_final.pth
    python demo.py --checkpoint output/quickstart/upernet_R18_synthetic/model_final.pth \
        --input "photos/*.jpg" --output demo_out/      # config and classes from the checkpoint
    python demo.py --checkpoint model_final.pth --video-input clip.mp4 --output demo_out/

What it writes, and the rest of its options: ``uper_parsing.cli.demo``, where the logic
lives (``pip install .`` also installs it as the ``uper-demo`` command).
"""

import sys

from uper_parsing.cli.demo import (
    IMAGE_EXTENSIONS,
    build_predictor,
    list_images,
    main,
    parse_args,
    run_images,
    run_video,
    write_outputs,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "build_predictor",
    "list_images",
    "main",
    "parse_args",
    "run_images",
    "run_video",
    "write_outputs",
]

if __name__ == "__main__":
    sys.exit(main())
